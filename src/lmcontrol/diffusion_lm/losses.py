"""The end-to-end objective of Diffusion-LM (Li et al. 2022 Eq. 2 with the x0-parametrization of §4.2).

    L = E_t ||f_θ(x_t, t) − x0||²              (x0-prediction, t ≥ 1; x0 ~ q_φ(x0 | w) = N(EMB(w), β_0 I))
      + ||f_θ(x_0', 0) − EMB(w)||²                    (the t = 0 term: at the first step the target is EMB(w))
      + ||sqrt(ᾱ_T) x0||²                              (prior term: q(x_T | x0) should match N(0, I))
      − log p_θ(w | x0)                                (rounding / decoder NLL with the tied head)

Squared errors are averaged over positions and dimensions, the NLL over tokens (as in the official code).

Two options beyond the paper: ``t_sampling="linear"`` draws t with p(t) ∝ t + 1 instead of uniformly, i.e. weights
each step's loss by 2(t + 1)/(T + 1), putting the effort where the denoiser is weak (high noise); and a model with
``config.self_condition`` gets, on half of the batches, its own stop-gradient x̂0 as the second input (Chen et al.
2022, "Analog Bits", §3.3) — the other half gets zeros, so it also works without one.
"""

from __future__ import annotations

import torch
from torch import nn

from lmcontrol.diffusion.schedule import add_noise
from lmcontrol.diffusion_lm.model import DiffusionLM


def sample_t(n: int, T: int, how: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """n training times in 0..T−1: uniform, or with p(t) ∝ t + 1 ("linear", by inverting the CDF)."""
    if how == "uniform":
        return torch.randint(0, T, (n,), generator=generator)
    u = torch.rand(n, generator=generator)
    return ((T + 1) * u.sqrt() - 1).floor().clamp(0, T - 1).long()


def diffusion_lm_loss(
    model: nn.Module,
    ids: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    t_sampling: str = "uniform",
) -> dict[str, torch.Tensor]:
    """All loss terms for a batch of word ids (B, L); ``loss`` is their sum (mean over the batch)."""
    core: DiffusionLM = getattr(model, "module", model)  # unwrap DDP
    ab = core.alphas_cumprod  # (T,)
    T = ab.shape[0]
    B = ids.shape[0]
    x0_mean = core.embed(ids)  # EMB(w): (B, L, d)
    std0 = (1 - ab[0]).sqrt()
    x0 = x0_mean + std0 * torch.randn(x0_mean.shape, generator=generator)  # x0 ~ q_φ(x0 | w)
    t = sample_t(B, T, t_sampling, generator)
    x_t = add_noise(x0, torch.randn(x0.shape, generator=generator), ab[t])  # q(x_t | x0), Ho et al. 2020 eq. 4
    x0_prev = None
    if core.config.self_condition:
        use = torch.rand(B, generator=generator) < 0.5  # (B,) rows that see their own first estimate
        with torch.no_grad():
            x0_prev = torch.where(use[:, None, None], model(x_t, t), torch.zeros_like(x_t)).detach()
    x0_hat = model(x_t, t, x0_prev)  # (B, L, d)
    mse = ((x0_hat - x0) ** 2).mean(dim=(1, 2))  # (B,)
    t0 = ((x0_hat - x0_mean) ** 2).mean(dim=(1, 2))  # (B,) the t = 0 term
    mse = torch.where(t == 0, t0, mse)
    prior = ((ab[-1].sqrt() * x0) ** 2).mean(dim=(1, 2))  # (B,) mean of q(x_T | x0) vs N(0, I)
    logits = core.logits(x0)  # (B, L, V)
    nll = (
        nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten(), reduction="none")
        .view(ids.shape)
        .mean(1)
    )
    loss = (mse + prior + nll).mean()
    return {
        "loss": loss,
        "mse": mse.mean().detach(),
        "nll": nll.mean().detach(),
        "prior": prior.mean().detach(),
    }
