"""Samplers as pure functions over a denoiser callable (one signature for all, k-diffusion style).

    x0 = sample_ancestral(denoiser, x_T, timesteps, clamp=True, guidance=None, callback=None, generator=g)

``denoiser(x_t, t) -> x0_hat`` predicts x0 (Li et al. 2022 §4.2) and ``denoiser.clamp(x0)`` snaps vectors to
the nearest word embedding (the clamping trick). ``timesteps`` comes from ``schedule.spaced``. ``guidance``,
if given, is ``guidance(x_prev, mean, std, t_prev) -> x_prev``: it runs after each step on the proposed
x_{t−1} (plug-and-play control, §5.2). Nothing here touches gradients: the caller picks ``torch.no_grad()``
(guidance enables gradients locally). Inputs are never modified; the same generator state gives the same
output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from lmcontrol import LMControlError
from lmcontrol.diffusion_lm.schedule import Timesteps


class Denoiser(Protocol):
    """What a sampler needs: x0-prediction and the clamping projection."""

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def clamp(self, x0: torch.Tensor) -> torch.Tensor: ...


Guidance = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, torch.Tensor, torch.Tensor], None]  # (step index, x_prev, x0_hat)


def _check(x_T: torch.Tensor, timesteps: Timesteps) -> None:
    if x_T.dim() != 3:
        raise LMControlError(f"x_T must be (batch, seq_len, embed_dim), got shape {tuple(x_T.shape)}")
    if timesteps.t.numel() < 1:
        raise LMControlError("steps must be >= 1")


def _steps(x_T: torch.Tensor, timesteps: Timesteps):
    """(i, t, t_prev, ᾱ_t, ᾱ_prev) per step; the last step goes to ᾱ = 1 (clean data)."""
    n = timesteps.t.numel()
    for i in range(n):
        t = timesteps.t[i]
        t_prev = timesteps.t[i + 1] if i + 1 < n else torch.tensor(0)
        ab_t = float(timesteps.alpha_bar[i])
        ab_prev = float(timesteps.alpha_bar[i + 1]) if i + 1 < n else 1.0
        yield i, t.expand(x_T.shape[0]), t_prev.expand(x_T.shape[0]), ab_t, ab_prev


def _predict(denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, clamp: bool) -> torch.Tensor:
    x0_hat = denoiser(x, t)
    return denoiser.clamp(x0_hat) if clamp else x0_hat


def posterior(
    x0_hat: torch.Tensor, x_t: torch.Tensor, ab_t: float, ab_prev: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of q(x_prev | x_t, x0) for a (respaced) step ᾱ_t → ᾱ_prev (Ho et al. 2020 Eq. 7)."""
    beta = 1.0 - ab_t / ab_prev  # the effective β of the respaced step
    coef_x0 = ab_prev**0.5 * beta / (1.0 - ab_t)
    coef_xt = (1.0 - beta) ** 0.5 * (1.0 - ab_prev) / (1.0 - ab_t)
    var = beta * (1.0 - ab_prev) / (1.0 - ab_t)
    return coef_x0 * x0_hat + coef_xt * x_t, torch.tensor(max(var, 0.0) ** 0.5)


def sample_ancestral(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    timesteps: Timesteps,
    *,
    clamp: bool,
    guidance: Guidance | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Ancestral sampling x_{t−1} ~ p_θ(x_{t−1} | x_t) with x0-prediction (Li et al. 2022 §4.2, Eq. 1).

    Args:
        denoiser: ``denoiser(x_t, t) -> x0_hat`` with a ``clamp`` method.
        x_T: starting noise (B, L, d); not modified.
        timesteps: visited steps from ``schedule.spaced``.
        clamp: snap x0_hat to the nearest word embedding at every step (clamping trick, §4.2).
        guidance: ``guidance(x_prev, mean, std, t_prev) -> x_prev`` (plug-and-play control).
        callback: ``callback(i, x_prev, x0_hat)`` after every step.
        generator: RNG for the ancestral noise.
    Returns the final x0 (B, L, d); round it with ``model.decode``.
    """
    _check(x_T, timesteps)
    x = x_T.clone()
    for i, t, t_prev, ab_t, ab_prev in _steps(x_T, timesteps):
        x0_hat = _predict(denoiser, x, t, clamp)
        mean, std = posterior(x0_hat, x, ab_t, ab_prev)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) if float(std) > 0 else 0.0
        x = mean + std * noise
        if guidance is not None:
            x = guidance(x, mean, std, t_prev)
        if callback is not None:
            callback(i, x, x0_hat)
    return x


def sample_ddim(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    timesteps: Timesteps,
    *,
    clamp: bool,
    guidance: Guidance | None = None,
    callback: Callback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Deterministic DDIM steps (Song et al. 2021 Eq. 12, η = 0) with x0-prediction; same arguments as
    ``sample_ancestral`` (``generator`` is unused). Guidance sees std = 0 and the DDIM point as its mean."""
    del generator  # deterministic
    _check(x_T, timesteps)
    x = x_T.clone()
    for i, t, t_prev, ab_t, ab_prev in _steps(x_T, timesteps):
        x0_hat = _predict(denoiser, x, t, clamp)
        eps_hat = (x - ab_t**0.5 * x0_hat) / (1.0 - ab_t) ** 0.5
        x = ab_prev**0.5 * x0_hat + (1.0 - ab_prev) ** 0.5 * eps_hat
        if guidance is not None:
            x = guidance(x, x.detach(), torch.tensor(0.0), t_prev)
        if callback is not None:
            callback(i, x, x0_hat)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"ancestral": sample_ancestral, "ddim": sample_ddim}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """A sampler by name ("ancestral" or "ddim")."""
    if name not in SAMPLERS:
        raise LMControlError(f"unknown sampler '{name}' (known: {', '.join(SAMPLERS)})")
    return SAMPLERS[name]
