"""The cosine noise schedule with a log-SNR shift, and the v-parameterisation (continuous time t in [0, 1]).

Variance preserving: z_t = sqrt(α²_t) x + sqrt(1 − α²_t) ε. The cosine schedule (Nichol & Dhariwal 2021)
α²(t) = cos²(πt/2); a shift (Hoogeboom et al. 2023) adds 2·log(scale) to the log-SNR, so scale > 1 means less
noise at every t. DGLM trains its prompt generator with noise drawn from a cosine schedule shifted by 2.

v-prediction (Salimans & Ho 2022): v = α ε − σ x, so x = α z − σ v and ε = σ z + α v (α² + σ² = 1).
"""

from __future__ import annotations

import math

import torch


def alpha2(t: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """α²(t) of the shifted cosine schedule, t in [0, 1] (t = 0 clean, t = 1 pure noise)."""
    base = torch.cos(t.clamp(0, 1) * math.pi / 2) ** 2
    log_snr = (torch.log(base.clamp(min=1e-12)) - torch.log((1 - base).clamp(min=1e-12))).clamp(-20, 20)
    return torch.sigmoid(log_snr + 2 * math.log(scale))


def noise(x: torch.Tensor, a2: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_t, ε): the variance-preserving forward process at α² = ``a2`` (broadcast over the last dim)."""
    eps = torch.randn_like(x) if eps is None else eps
    return a2.sqrt() * x + (1 - a2).sqrt() * eps, eps


def v_target(x: torch.Tensor, eps: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
    return a2.sqrt() * eps - (1 - a2).sqrt() * x


def x_from_v(z: torch.Tensor, v: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
    return a2.sqrt() * z - (1 - a2).sqrt() * v


def eps_from_v(z: torch.Tensor, v: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
    return (1 - a2).sqrt() * z + a2.sqrt() * v


def x_from_eps(z: torch.Tensor, eps: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
    return (z - (1 - a2).sqrt() * eps) / a2.sqrt()


def time_embedding(a2: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features (B, dim) of the log-SNR, the noise level both networks are conditioned on."""
    log_snr = (torch.log(a2.clamp(min=1e-12)) - torch.log((1 - a2).clamp(min=1e-12))).clamp(-20, 20)
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
    angles = log_snr.reshape(-1, 1) * 50.0 * freqs  # log-SNR spans ~[-20, 20]; x50 spreads it like steps
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
