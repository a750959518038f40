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
from lmcontrol.diffusion.guidance import classifier_guidance

if TYPE_CHECKING:
    from lmcontrol.dglm.model import SemanticDiffusion
    from lmcontrol.diffusion.samplers import Denoiser
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
    """The sampler's denoiser: CFG on v (``model.denoiser``), then probe guidance on ε (module docstring)."""
    denoiser = model.denoiser(context, cfg_scale)
    if not guides:
        return denoiser

    def log_prob(x0: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
        """−Σ_i w_i L_i (B,) on the posterior spread x̂0 + sqrt(σ²/α²) ξ, mapped to the unit sphere."""
        spread = ((1 - a2) / a2).sqrt()[:, None, None]  # (B, 1, 1)
        noise = torch.randn(x0.shape[0], mc_samples, x0.shape[1], generator=generator)  # (B, n, d)
        unit = model.space.to_unit(x0.unsqueeze(1) + spread * noise)  # (B, n, d)
        return -sum(g.weight * g.loss(unit) for g in guides)  # type: ignore[return-value]

    # at the noisiest steps 1/α is huge; keep x̂0 inside the range standardised data occupies
    return classifier_guidance(denoiser, log_prob, x0_clip=X0_CLIP)
