"""Plug-and-play attribute guidance with linear probes on the predicted embedding (DGLM §3.3).

A guide is a probe (logistic regression on unit-norm encoder embeddings, ``lmcontrol.eval.probes``), a label,
a direction (toward / away) and a weight w. At every diffusion step the denoiser's x̂0 is perturbed with the
posterior spread (x̂0 + sqrt(σ²/α²) ξ, n Monte-Carlo samples, as in DGLM's code), mapped to the unit sphere
and scored; the guided noise prediction is

    ε̃ = ε̂ + σ_t · ∇_z Σ_i w_i L_i,   L_toward = −log E[p(y | x)],   L_away = −log E[1 − p(y | x)]

(classifier guidance, Dhariwal & Nichol 2021, eq. 14, written for ε), and x̂0 is recomputed from ε̃. Several
guides compose by summing their weighted losses. Classifier-free guidance (Ho & Salimans 2022) is applied to
v before any of this.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from lmcontrol import LMControlError
from lmcontrol.dglm import schedule

if TYPE_CHECKING:
    from lmcontrol.dglm.model import SemanticDiffusion
    from lmcontrol.dglm.sampling import Denoiser
    from lmcontrol.eval.probes import LinearProbe


X0_CLIP = 8.0  # standardised units


@dataclasses.dataclass(frozen=True)
class ProbeGuide:
    probe: LinearProbe
    label: int  # column of the probe's logits
    weight: float
    away: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        if not math.isfinite(self.weight):
            raise LMControlError(f"guidance weight for '{self.name}' must be a finite number, got {self.weight}")
        if self.weight < 0:
            raise LMControlError(f"guidance weight for '{self.name}' must be >= 0 (use away/toward), got {self.weight}")

    def loss(self, unit: torch.Tensor) -> torch.Tensor:
        """(B,) Monte-Carlo loss from unit embeddings (B, n, d)."""
        logp = self.probe(unit).log_softmax(-1)[..., self.label]  # (B, n)
        if self.away:
            logp = torch.log1p(-logp.exp().clamp(max=1 - 1e-6))
        return -(torch.logsumexp(logp, dim=-1) - math.log(logp.shape[-1]))


def guided_denoiser(
    model: SemanticDiffusion,
    context: torch.Tensor,
    cfg_scale: float = 1.0,
    guides: Sequence[ProbeGuide] = (),
    mc_samples: int = 8,
    generator: torch.Generator | None = None,
) -> Denoiser:
    """A ``(z, a2) -> (x̂0, ε̂)`` callable for the samplers: CFG on v, then probe guidance on ε."""

    def denoise(z: torch.Tensor, a2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not guides:
            with torch.no_grad():
                v = model.guided_v(z, a2, context, cfg_scale)
            return schedule.x_from_v(z, v, a2), schedule.eps_from_v(z, v, a2)
        with torch.enable_grad():
            zg = z.detach().requires_grad_(True)
            v = model.guided_v(zg, a2, context, cfg_scale)
            x0 = schedule.x_from_v(zg, v, a2)
            spread = ((1 - a2) / a2).sqrt().unsqueeze(1)  # (B, 1, 1)
            noise = torch.randn(x0.shape[0], mc_samples, x0.shape[1], generator=generator)
            unit = model.space.to_unit(x0.unsqueeze(1) + spread * noise)  # (B, n, d)
            total = sum(g.weight * g.loss(unit) for g in guides)
            grad = torch.autograd.grad(total.sum(), zg)[0]  # type: ignore[union-attr]
        eps = schedule.eps_from_v(z, v.detach(), a2) + (1 - a2).sqrt() * grad
        # at the noisiest steps 1/α is huge; keep x̂0 inside the range standardised data occupies
        return schedule.x_from_eps(z, eps, a2).clamp(-X0_CLIP, X0_CLIP), eps

    return denoise
