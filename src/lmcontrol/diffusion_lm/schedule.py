"""Noise schedules as pure functions (Li et al. 2022 §4.3 and App. A).

The sqrt schedule ᾱ(τ) = 1 − sqrt(τ + s), τ = t/T, adds noise fast at the start — word vectors are so far
apart that the low-noise steps of a cosine/linear schedule teach the model nothing. As in the official code,
ᾱ is turned into per-step β_t = min(1 − ᾱ((t+1)/T)/ᾱ(t/T), 0.999) and ᾱ_t = Π_{i≤t}(1 − β_i), t = 0…T−1.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lmcontrol import LMControlError


def sqrt_alpha_bar(tau: torch.Tensor, s: float = 1e-4) -> torch.Tensor:
    """ᾱ(τ) = 1 − sqrt(τ + s) for τ = t/T in [0, 1]."""
    return 1.0 - torch.sqrt(tau + s)


def alphas_cumprod(T: int, kind: str = "sqrt", s: float = 1e-4) -> torch.Tensor:
    """ᾱ_t for t = 0…T−1 (float64, strictly decreasing)."""
    if T < 2:
        raise LMControlError(f"diffusion_steps must be >= 2, got {T}")
    if kind == "sqrt":
        tau = torch.arange(T + 1, dtype=torch.float64) / T
        ab = sqrt_alpha_bar(tau, s)
        betas = (1.0 - ab[1:] / ab[:-1]).clamp(max=0.999)
    elif kind == "linear":  # Ho et al. 2020, for comparison
        scale = 1000.0 / T
        betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
    else:
        raise LMControlError(f"unknown schedule '{kind}' (known: sqrt, linear)")
    return torch.cumprod(1.0 - betas, dim=0)


class Timesteps(NamedTuple):
    """The steps a sampler visits: model time indices ``t`` (descending) and their ᾱ_t."""

    t: torch.Tensor  # (n,) long, descending, ends at 0
    alpha_bar: torch.Tensor  # (n,) float64


def spaced(ab: torch.Tensor, n_steps: int) -> Timesteps:
    """``n_steps`` evenly spaced steps from T−1 down to 0 (respacing, Nichol & Dhariwal 2021)."""
    T = ab.shape[0]
    if not isinstance(n_steps, int) or n_steps < 1:
        raise LMControlError(f"steps must be >= 1, got {n_steps}")
    if n_steps > T:
        raise LMControlError(f"steps must be <= diffusion_steps ({T}), got {n_steps}")
    t = torch.linspace(T - 1, 0, n_steps, dtype=torch.float64).round().long()
    t = torch.unique_consecutive(t)
    return Timesteps(t=t, alpha_bar=ab[t])
