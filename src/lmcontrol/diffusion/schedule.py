"""A noise schedule with its prediction type, and the maths between the three parameterisations.

Variance preserving forward process (Ho et al. 2020, eq. 4): x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε, so with
α = sqrt(ᾱ) and σ = sqrt(1 − ᾱ), α² + σ² = 1. A network predicts one of

- ``x0``: the clean sample (Li et al. 2022 §4.2, "x0-parametrisation");
- ``eps``: the noise ε (Ho et al. 2020, eq. 11); x0 = (x_t − σ ε) / α;
- ``v``: v = α ε − σ x0 (Salimans & Ho 2022, §4 / App. D); x0 = α x_t − σ v and ε = σ x_t + α v.

Schedules (``kind``):

- ``cosine``: ᾱ(t) = cos²(πt/2) (Nichol & Dhariwal 2021, eq. 17 with s = 0), optionally with the log-SNR shifted
  by 2 log(shift) (Hoogeboom et al. 2023, §3.1: shift > 1 means less noise at every t);
- ``sqrt``: ᾱ(τ) = 1 − sqrt(τ + s) (Li et al. 2022 §4.3, App. A), which adds noise fast at the start;
- ``linear``: β linear from 1e-4 to 0.02 scaled to T steps (Ho et al. 2020, §4; discrete only).

A schedule is *continuous* (``steps=None``, t ∈ [0, 1]) or *discrete* (``steps=T``, t = 0 … T−1). A discrete
schedule turns ᾱ(τ) into per-step β_t = min(1 − ᾱ((t+1)/T) / ᾱ(t/T), 0.999) and ᾱ_t = Π_{i≤t}(1 − β_i), as in
Nichol & Dhariwal 2021 (eq. 17 ff.) and the Diffusion-LM code.

Coefficients are computed in the dtype of ᾱ (float64 for a discrete table, float32 for a continuous grid) and
then cast to the sample's dtype, so the maths near ᾱ = 1 keeps its precision.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from lmcontrol import LMControlError

PREDICTION_TYPES = ("x0", "eps", "v")
Output = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # the network: (x_t, t, ᾱ) -> output
KINDS = ("cosine", "sqrt", "linear")


class Prediction(NamedTuple):
    """What a denoiser returns: the predicted clean sample x̂0 and noise ε̂, both shaped like x_t."""

    x0: torch.Tensor
    eps: torch.Tensor


class Timesteps(NamedTuple):
    """The grid a sampler walks: n steps from ``t[0]`` (noisiest) to ``t[n]`` (the target, ᾱ = 1 = clean).

    Attributes:
        t: (n + 1,) the denoiser's time input at each point (model step indices, or continuous times).
        alpha_bar: (n + 1,) ᾱ at each point, increasing; ``alpha_bar[n]`` is 1 (clean data).
    """

    t: torch.Tensor
    alpha_bar: torch.Tensor

    @property
    def steps(self) -> int:
        return int(self.t.numel()) - 1


def as_coef(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-row (B,) or scalar coefficient, cast to x's dtype/device and shaped to broadcast over x (B, ...)."""
    coef = coef.to(dtype=x.dtype, device=x.device)
    return coef.reshape(-1, *[1] * (x.dim() - 1)) if coef.dim() else coef


def log_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """log(ᾱ / (1 − ᾱ)), clipped to [−20, 20] (Kingma et al. 2021, the variational-diffusion SNR)."""
    return (torch.log(alpha_bar.clamp(min=1e-12)) - torch.log((1 - alpha_bar).clamp(min=1e-12))).clamp(-20, 20)


def add_noise(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε (Ho et al. 2020, eq. 4); ᾱ is (B,) or a scalar."""
    return as_coef(alpha_bar.sqrt(), x0) * x0 + as_coef((1 - alpha_bar).sqrt(), x0) * eps


def v_target(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """v = α ε − σ x0 (Salimans & Ho 2022, §4)."""
    return as_coef(alpha_bar.sqrt(), x0) * eps - as_coef((1 - alpha_bar).sqrt(), x0) * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x0 = α x_t − σ v (Salimans & Ho 2022, App. D)."""
    return as_coef(alpha_bar.sqrt(), x_t) * x_t - as_coef((1 - alpha_bar).sqrt(), x_t) * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """ε = σ x_t + α v (Salimans & Ho 2022, App. D)."""
    return as_coef((1 - alpha_bar).sqrt(), x_t) * x_t + as_coef(alpha_bar.sqrt(), x_t) * v


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x0 = (x_t − σ ε) / α (Ho et al. 2020, eq. 4 solved for x0)."""
    return (x_t - as_coef((1 - alpha_bar).sqrt(), x_t) * eps) / as_coef(alpha_bar.sqrt(), x_t)


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """ε = (x_t − α x0) / σ (Ho et al. 2020, eq. 4 solved for ε)."""
    return (x_t - as_coef(alpha_bar.sqrt(), x_t) * x0) / as_coef((1 - alpha_bar).sqrt(), x_t)


def respace(alphas_cumprod: torch.Tensor, n: int) -> Timesteps:
    """``n`` evenly spaced steps of a discrete table from T−1 down to 0, then the clean target (respacing,
    Nichol & Dhariwal 2021 §4). ``alphas_cumprod`` (T,) is used as given (its dtype is kept)."""
    T = int(alphas_cumprod.shape[0])
    if not isinstance(n, int) or n < 1:
        raise LMControlError(f"steps must be >= 1, got {n}")
    if n > T:
        raise LMControlError(f"steps must be <= diffusion_steps ({T}), got {n}")
    t = torch.unique_consecutive(torch.linspace(T - 1, 0, n, dtype=torch.float64).round().long())
    one = torch.ones(1, dtype=alphas_cumprod.dtype)
    return Timesteps(t=torch.cat([t, t.new_zeros(1)]), alpha_bar=torch.cat([alphas_cumprod[t], one]))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """ᾱ as a function of time, and what the network predicts.

    Args:
        kind: ``cosine``, ``sqrt`` or ``linear`` (see the module docstring).
        prediction_type: ``x0``, ``eps`` or ``v``: what the network's output means.
        steps: T for a discrete schedule (integer times 0 … T−1); None for continuous time t ∈ [0, 1].
        shift: cosine only: the log-SNR is shifted by 2 log(shift) (1 = plain cosine).
        s: sqrt only: the offset in ᾱ(τ) = 1 − sqrt(τ + s) (paper: 1e-4).
    """

    kind: str = "cosine"
    prediction_type: str = "eps"
    steps: int | None = None
    shift: float = 1.0
    s: float = 1e-4

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LMControlError(f"unknown schedule '{self.kind}' (known: {', '.join(KINDS)})")
        if self.prediction_type not in PREDICTION_TYPES:
            known = ", ".join(PREDICTION_TYPES)
            raise LMControlError(f"unknown prediction type '{self.prediction_type}' (known: {known})")
        if self.steps is not None and self.steps < 2:
            raise LMControlError(f"diffusion_steps must be >= 2, got {self.steps}")
        if self.steps is None and self.kind == "linear":
            raise LMControlError("the linear schedule is discrete: give steps=T")
        if not (math.isfinite(self.shift) and self.shift > 0):
            raise LMControlError(f"schedule shift must be > 0, got {self.shift}")

    # -- ᾱ ------------------------------------------------------------------------------------------------
    def continuous_alpha_bar(self, tau: torch.Tensor) -> torch.Tensor:
        """ᾱ(τ) of the continuous schedule for τ in [0, 1] (τ = 0 clean, τ = 1 pure noise)."""
        if self.kind == "sqrt":
            return 1.0 - torch.sqrt(tau + self.s)
        if self.kind == "cosine":
            base = torch.cos(tau.clamp(0, 1) * math.pi / 2) ** 2
            return torch.sigmoid(log_snr(base) + 2 * math.log(self.shift))
        raise LMControlError(f"the {self.kind} schedule has no continuous form")

    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t for t = 0 … T−1 of a discrete schedule (float64, strictly decreasing)."""
        if self.steps is None:
            raise LMControlError("a continuous schedule has no alphas_cumprod table; use alpha_bar(t)")
        T = self.steps
        if self.kind == "linear":
            scale = 1000.0 / T
            betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
        else:
            ab = self.continuous_alpha_bar(torch.arange(T + 1, dtype=torch.float64) / T)
            betas = (1.0 - ab[1:] / ab[:-1]).clamp(max=0.999)
        return torch.cumprod(1.0 - betas, dim=0)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ at times t: continuous t in [0, 1], or integer steps of a discrete schedule."""
        return self.continuous_alpha_bar(t) if self.steps is None else self.alphas_cumprod()[t]

    def timesteps(self, n: int) -> Timesteps:
        """The grid of an ``n``-step sampler: a uniform grid t = 1 → 0 (continuous; ᾱ clamped to [1e-6, 1] so
        x̂0 = (x_t − σ ε) / α stays finite at t = 1), or ``respace`` of the discrete table."""
        if self.steps is not None:
            return respace(self.alphas_cumprod(), n)
        if not isinstance(n, int) or n < 1:
            raise LMControlError(f"diffusion steps must be >= 1, got {n}")
        times = torch.linspace(1.0, 0.0, n + 1)
        return Timesteps(t=times, alpha_bar=self.continuous_alpha_bar(times).clamp(1e-6, 1.0))

    # -- the parameterisations ----------------------------------------------------------------------------
    def target(self, x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """The regression target of the network for a noised x0 (x0, ε or v)."""
        if self.prediction_type == "v":
            return v_target(x0, eps, alpha_bar)
        return x0 if self.prediction_type == "x0" else eps

    def prediction(self, x_t: torch.Tensor, output: torch.Tensor, alpha_bar: torch.Tensor) -> Prediction:
        """(x̂0, ε̂) from the network's ``output`` at x_t and ᾱ (B,)."""
        if self.prediction_type == "v":
            return Prediction(x0_from_v(x_t, output, alpha_bar), eps_from_v(x_t, output, alpha_bar))
        if self.prediction_type == "eps":
            return Prediction(x0_from_eps(x_t, output, alpha_bar), output)
        return Prediction(output, eps_from_x0(x_t, output, alpha_bar))

    def denoiser(self, output: Output) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Prediction]:
        """A sampler's ``Denoiser`` from the network ``output(x_t, t, alpha_bar)`` of this prediction type."""
        return lambda x_t, t, alpha_bar: self.prediction(x_t, output(x_t, t, alpha_bar), alpha_bar)
