"""Guidance as wrappers: they take a network output function or a ``Denoiser`` and return one of the same kind,
so the samplers stay generic and guidances compose by nesting.

- ``classifier_free(output, context, null_context, scale)``: o = o_∅ + w (o_c − o_∅) (Ho & Salimans 2022, eq. 6)
  on the network output (linear in x0, ε and v alike), conditional and unconditional rows in one forward.
- ``classifier_guidance(denoiser, log_prob)``: ε̃ = ε̂ − σ_t ∇_{x_t} log p(c | x̂0(x_t)) (Dhariwal & Nichol 2021,
  eq. 14, written for ε; the classifier reads the predicted x̂0 as in DGLM §3.3), then x̂0 from ε̃.
- ``GradientCorrector``: Diffusion-LM's plug-and-play control (Li et al. 2022 §5.2, eq. 3 ff.), gradient steps on
  the sampled x_{t−1} itself; it runs as the samplers' ``corrector`` because it moves x_{t−1}, not x̂0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmcontrol import LMControlError
from lmcontrol.diffusion.samplers import Denoiser
from lmcontrol.diffusion.schedule import Prediction, as_coef, x0_from_eps

ContextOutput = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Output = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
LogProb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x0_hat, ᾱ (B,)) -> log p(c | x0_hat) (B,)
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t (B,)) -> log p(c | x_t) (B,)


def classifier_free(
    output: ContextOutput, context: torch.Tensor, null_context: torch.Tensor, scale: float = 1.0
) -> Output:
    """``output(x_t, t, ᾱ, context)`` with classifier-free guidance of weight w = ``scale`` (1 = conditional,
    0 = unconditional); ``null_context`` (d,) is the learned "no condition" input."""

    def guided(x: torch.Tensor, t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        if scale == 1.0:
            return output(x, t, alpha_bar, context)
        both = output(  # (2B, ...): conditional rows, then unconditional ones
            torch.cat([x, x]),
            torch.cat([t, t]),
            torch.cat([alpha_bar, alpha_bar]),
            torch.cat([context, null_context.expand_as(context)]),
        )
        cond, uncond = both.chunk(2)
        return uncond + scale * (cond - uncond)

    return guided


def classifier_guidance(denoiser: Denoiser, log_prob: LogProb, *, x0_clip: float | None = None) -> Denoiser:
    """Classifier guidance on ε through the predicted x̂0 (module docstring); ``x0_clip`` clamps the guided x̂0
    to [−c, c] (diffusers' ``clip_sample``), which keeps it finite where 1/α is huge."""

    def guided(x: torch.Tensor, t: torch.Tensor, alpha_bar: torch.Tensor) -> Prediction:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            pred = denoiser(xg, t, alpha_bar)
            grad = torch.autograd.grad(log_prob(pred.x0, alpha_bar).sum(), xg)[0]
        eps = pred.eps.detach() - as_coef((1 - alpha_bar).sqrt(), x) * grad
        x0 = x0_from_eps(x, eps, alpha_bar)
        return Prediction(x0 if x0_clip is None else x0.clamp(-x0_clip, x0_clip), eps)

    return guided


class GradientCorrector:
    """K gradient steps on x_{t−1} per diffusion step (Li et al. 2022 §5.2, eq. 3 ff.; K = 3, λ = 0.01).

    Each step descends −log p(c | x_{t−1}) + λ ||x_{t−1} − μ||² / σ (μ, σ: the step's mean and std; σ = 0, as
    in DDIM or the last step, counts as 1) with one Adagrad step from a fresh state, i.e. a signed-gradient step
    of size ``step_size`` per coordinate, as in the official code. No guidance at model times below
    ``skip_below`` (the last few steps only polish the result). Positions in ``frozen`` (x.shape[:-1]) never move.
    """

    def __init__(
        self,
        objective: Objective,
        *,
        steps: int = 3,
        step_size: float = 0.1,
        fluency: float = 0.01,
        frozen: torch.Tensor | None = None,
        skip_below: int = 100,
    ) -> None:
        if steps < 0:
            raise LMControlError(f"guidance steps must be >= 0, got {steps}")
        self.objective, self.steps, self.step_size = objective, steps, step_size
        self.fluency, self.frozen, self.skip_below = fluency, frozen, skip_below

    def __call__(self, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if int(t.max()) < self.skip_below:
            return x
        sigma = float(std) if float(std) > 0 else 1.0
        mean, x = mean.detach(), x.detach()
        for _ in range(self.steps):
            with torch.enable_grad():
                p = x.clone().requires_grad_(True)
                log_p_c = self.objective(p, t)  # (B,)
                fluency = ((p - mean) ** 2).flatten(1).sum(1) / sigma  # (B,) −log p(x_{t−1} | x_t) + const
                (-log_p_c + self.fluency * fluency).sum().backward()
            grad = p.grad
            if self.frozen is not None:
                grad = grad.masked_fill(self.frozen[..., None], 0.0)
            x = x - self.step_size * grad / (grad.abs() + 1e-10)  # fresh Adagrad step = signed step
        return x
