"""Samplers as pure functions over a denoiser callable, one signature for all (k-diffusion style):

    x0 = sample_ddim(denoiser, x_T, timesteps, callback=None)
    x0 = sample_ancestral(denoiser, x_T, timesteps, generator=g)

``denoiser(x_t, t, alpha_bar) -> Prediction(x0, eps)`` at model times t (B,) and noise levels ᾱ (B,) (see
``Schedule.denoiser``); guidance and method-specific projections (clamping, imputation) are wrappers of it
(``lmcontrol.diffusion.guidance``). ``timesteps`` is a ``Timesteps`` grid (``Schedule.timesteps``, ``respace``)
ending at ᾱ = 1; the step onto it returns x̂0 itself. Every sampler also takes

- ``corrector(x_prev, mean, std, t_prev) -> x_prev``: a corrector run after each step on the proposed x_{t−1},
  given the step's mean and std (the predictor-corrector pattern of Song et al. 2021 §4.2; Diffusion-LM's
  classifier guidance is one, ``guidance.GradientCorrector``);
- ``callback(i, x_prev, x0_hat)`` after each step.

Nothing here touches gradients: the caller picks ``torch.no_grad()`` (guidance enables gradients locally).
Inputs are never modified; the same generator state gives the same output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch

from lmcontrol import LMControlError
from lmcontrol.diffusion.schedule import Prediction, Timesteps, as_coef

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Prediction]  # (x_t, t (B,), ᾱ (B,)) -> (x̂0, ε̂)
Corrector = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, torch.Tensor, torch.Tensor], None]  # (step index, x_prev, x0_hat)
CLEAN = 1.0 - 1e-6  # a step onto ᾱ >= CLEAN lands on x̂0


class _Step(NamedTuple):
    i: int
    t: torch.Tensor  # (B,) model time of x_t
    alpha_bar: torch.Tensor  # (B,) ᾱ_t, for the denoiser
    t_prev: torch.Tensor  # (B,) model time of the step's target
    ab: torch.Tensor  # () ᾱ_t
    ab_prev: torch.Tensor  # () ᾱ of the step's target


def _steps(x: torch.Tensor, timesteps: Timesteps) -> Iterator[_Step]:
    """The n steps of the grid, with times and noise levels expanded to the batch."""
    if timesteps.steps < 1:
        raise LMControlError("diffusion steps must be >= 1")
    b = x.shape[0]
    for i in range(timesteps.steps):
        ab, ab_prev = timesteps.alpha_bar[i], timesteps.alpha_bar[i + 1]
        yield _Step(i, timesteps.t[i].expand(b), ab.expand(b), timesteps.t[i + 1].expand(b), ab, ab_prev)


Update = Callable[[torch.Tensor, Prediction, _Step, torch.Generator | None], tuple[torch.Tensor, ...]]


def _walk(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: Timesteps,
    update: Update,
    generator: torch.Generator | None,
    callback: Callback | None,
    corrector: Corrector | None,
) -> torch.Tensor:
    """The loop every sampler shares: predict, step with ``update(x, pred, step, generator) -> (x_prev, mean,
    std)`` (or land on x̂0 when the target is clean), correct, report."""
    x = x.clone()
    for step in _steps(x, timesteps):
        pred = denoiser(x, step.t, step.alpha_bar)
        if float(step.ab_prev) >= CLEAN:
            x, mean, std = pred.x0, pred.x0, torch.zeros((), dtype=x.dtype)
        else:
            x, mean, std = update(x, pred, step, generator)
        if corrector is not None:
            x = corrector(x, mean, std.to(x.dtype), step.t_prev)
        if callback is not None:
            callback(step.i, x, pred.x0)
    return x


def _ddim_update(x: torch.Tensor, pred: Prediction, step: _Step, generator: torch.Generator | None):  # noqa: ANN202
    """x_s = α_s x̂0 + σ_s ε̂ (Song et al. 2021, eq. 12 with η = 0); a corrector sees std 0 and x_s as the mean."""
    x_prev = as_coef(step.ab_prev.sqrt(), x) * pred.x0 + as_coef((1 - step.ab_prev).sqrt(), x) * pred.eps
    return x_prev, x_prev.detach(), torch.zeros((), dtype=x.dtype)


def sample_ddim(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: Timesteps,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    corrector: Corrector | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (Song et al. 2021, eq. 12 with η = 0): x_s = α_s x̂0 + σ_s ε̂. ``generator`` is unused;
    a corrector sees std = 0 and the DDIM point as its mean. Returns the final x̂0 (same shape as x)."""
    return _walk(denoiser, x, timesteps, _ddim_update, None, callback, corrector)


def posterior(
    x0: torch.Tensor, x_t: torch.Tensor, ab_t: torch.Tensor, ab_prev: torch.Tensor, var_interp: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of q(x_prev | x_t, x0) for one (respaced) step ᾱ_t → ᾱ_prev (Ho et al. 2020, eq. 6–7).

    The effective β = 1 − ᾱ_t/ᾱ_prev; the variance is the posterior β̃ = β (1 − ᾱ_prev)/(1 − ᾱ_t) for
    ``var_interp`` = 0, and exp(v log β + (1 − v) log β̃) otherwise (Nichol & Dhariwal 2021, eq. 15, v fixed)."""
    beta = 1.0 - ab_t / ab_prev
    coef_x0 = ab_prev.sqrt() * beta / (1.0 - ab_t)
    coef_xt = (1.0 - beta).sqrt() * (1.0 - ab_prev) / (1.0 - ab_t)
    var = (beta * (1.0 - ab_prev) / (1.0 - ab_t)).clamp(min=0.0)
    if var_interp:
        var = torch.exp(var_interp * torch.log(beta) + (1 - var_interp) * torch.log(var.clamp(min=1e-20)))
    return as_coef(coef_x0, x0) * x0 + as_coef(coef_xt, x_t) * x_t, var.sqrt()


def sample_ancestral(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: Timesteps,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    corrector: Corrector | None = None,
    var_interp: float = 0.0,
    noise_scale: float = 1.0,
) -> torch.Tensor:
    """Ancestral sampling x_{t−1} ~ q(x_{t−1} | x_t, x̂0) (Ho et al. 2020, Alg. 2 written with x̂0, eq. 7).

    Args:
        denoiser: ``denoiser(x_t, t, alpha_bar) -> Prediction``.
        x: the starting noise x_T; not modified.
        timesteps: the grid (ends at ᾱ = 1).
        generator: RNG of the step noise.
        callback: ``callback(i, x_prev, x0_hat)`` after every step.
        corrector: ``corrector(x_prev, mean, std, t_prev) -> x_prev`` after every step.
        var_interp: v in exp(v log β + (1 − v) log β̃): 0 = the posterior variance, 1 = β (DGLM uses 0.2).
        noise_scale: s in x_{t−1} = μ + s·σ·z, a sampling temperature (s < 1 trades diversity for typicality, as
            the reduced-temperature sampling of Gulrajani & Hashimoto 2023 §5; 1 = the exact step, 0 = its mean).
    Returns the final x̂0.
    """
    if not 0.0 <= var_interp <= 1.0:
        raise LMControlError(f"var_interp must be in [0, 1], got {var_interp}")
    if not 0.0 <= noise_scale <= 1.0:
        raise LMControlError(f"noise_scale must be in [0, 1], got {noise_scale}")

    def update(x: torch.Tensor, pred: Prediction, step: _Step, generator: torch.Generator | None):  # noqa: ANN202
        mean, std = posterior(pred.x0, x, step.ab, step.ab_prev, var_interp)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return mean + as_coef(noise_scale * std, x) * noise, mean, std

    return _walk(denoiser, x, timesteps, update, generator, callback, corrector)


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"ancestral": sample_ancestral, "ddim": sample_ddim}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """A sampler by name (``ancestral`` or ``ddim``)."""
    if name not in SAMPLERS:
        raise LMControlError(f"unknown sampler '{name}' (known: {', '.join(SAMPLERS)})")
    return SAMPLERS[name]
