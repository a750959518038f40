"""Samplers for the semantic diffusion, as pure functions over a denoiser callable (k-diffusion style).

    x0 = sample_ddim(denoiser, z_T, steps=25, scale=1.0)
    x0 = sample_ddpm(denoiser, z_T, steps=100, scale=1.0, generator=g)

``denoiser(z, a2) -> (x̂0, ε̂)`` returns the predicted clean embedding and noise at α² (B, 1); guidance
(classifier-free or probe gradients) lives inside the callable (see ``dglm.guidance``), so the samplers only
walk the schedule. Times run from t = 1 (pure noise) to 0 on a uniform grid of the shifted cosine schedule.
Inputs are never modified; the same generator state gives the same output.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmcontrol import LMControlError
from lmcontrol.dglm import schedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # (z, a2) -> (x0, eps)


def _grid(steps: int, scale: float, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if steps < 1:
        raise LMControlError(f"diffusion steps must be >= 1, got {steps}")
    times = torch.linspace(1.0, 0.0, steps + 1)
    a2 = schedule.alpha2(times, scale).clamp(1e-6, 1.0)
    return [(a2[i].expand(batch, 1), a2[i + 1].expand(batch, 1)) for i in range(steps)]


def sample_ddim(denoiser: Denoiser, z_T: torch.Tensor, steps: int = 25, scale: float = 1.0) -> torch.Tensor:
    """Deterministic DDIM (Song et al. 2021, eq. 12 with η = 0): z_s = α_s x̂0 + σ_s ε̂. Returns x̂0 (B, d)."""
    z = z_T.clone()
    x0 = z
    for a2, a2_next in _grid(steps, scale, z.shape[0]):
        x0, eps = denoiser(z, a2)
        if float(a2_next[0]) >= 1.0 - 1e-6:
            return x0
        z = a2_next.sqrt() * x0 + (1 - a2_next).sqrt() * eps
    return x0


def sample_ddpm(
    denoiser: Denoiser,
    z_T: torch.Tensor,
    steps: int = 100,
    scale: float = 1.0,
    var_lambda: float = 0.2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, eq. 7) on the continuous-time grid, with the step variance
    interpolated in log space between the posterior variance (λ = 0) and β (λ = 1), as DGLM's code does."""
    if not 0.0 <= var_lambda <= 1.0:
        raise LMControlError(f"var_lambda must be in [0, 1], got {var_lambda}")
    z = z_T.clone()
    x0 = z
    for a2, a2_next in _grid(steps, scale, z.shape[0]):
        x0, eps = denoiser(z, a2)
        if float(a2_next[0]) >= 1.0 - 1e-6:
            return x0
        a2_step = a2 / a2_next  # ᾱ_t / ᾱ_s: the one-step α² from s to t
        beta = 1.0 - a2_step
        posterior = (1 - a2_next) / (1 - a2) * beta
        var = torch.exp(var_lambda * torch.log(beta) + (1 - var_lambda) * torch.log(posterior.clamp(min=1e-20)))
        mean = (z - beta / (1 - a2).sqrt() * eps) / a2_step.sqrt()
        noise = torch.randn(z.shape, generator=generator)
        z = mean + var.sqrt() * noise
    return x0
