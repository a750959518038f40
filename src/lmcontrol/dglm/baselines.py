"""The attribute-control baselines DGLM is compared against, built from the same linear probes.

- ``ProbeFudge`` — FUDGE (Yang & Klein 2021, eq. 3): at each step keep the top-k next tokens and add
  w · log p(attribute | continuation so far + candidate) from the probe (on the encoder embedding of each
  candidate continuation) to their logits; every other token is dropped.
- ``SteeringVector`` — activation addition (Turner et al. 2023; the mean-difference variant of Rimsky et al.
  2024): v = mean residual state of texts with the wanted attribute − mean of texts without it, at one layer,
  scaled to a fraction of the typical residual norm and added to every new token's state.
Prompting (a system message) is the core ``system`` control and needs nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from lmcontrol import LMControlError
from lmcontrol.controls import Control, StepContext

if TYPE_CHECKING:
    from lmcontrol.dglm.guidance import ProbeGuide
    from lmcontrol.models import LanguageModel


class ProbeFudge(Control):
    """FUDGE-style logit guidance with a linear probe on the encoder embedding of each candidate continuation."""

    name = "probe-fudge"
    chat = False

    def __init__(self, guides: Sequence[ProbeGuide], encoder: object, topk: int = 8) -> None:
        if topk < 2:
            raise LMControlError(f"FUDGE top-k must be >= 2, got {topk}")
        self.guides, self.encoder, self.topk = list(guides), encoder, topk

    def process_logits(self, logits: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        k = min(self.topk, logits.shape[-1])
        top = logits.float().log_softmax(-1).topk(k, dim=-1)  # (B, k)
        so_far = ctx.input_ids[:, ctx.input_ids.shape[1] - ctx.step :] if ctx.step else ctx.input_ids[:, :0]
        cands = torch.cat([so_far.repeat_interleave(k, 0), top.indices.reshape(-1, 1)], dim=1)  # (B*k, t+1)
        texts = ctx.lm.tokenizer.batch_decode(cands, skip_special_tokens=True)
        unit = (
            self.encoder.encode(  # type: ignore[attr-defined]
                texts, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False, batch_size=128
            )
            .float()
            .cpu()
        )
        unit = unit.unsqueeze(1)  # (B*k, n=1, d): ProbeGuide.loss averages over n samples
        with torch.no_grad():
            bonus = -sum(g.weight * g.loss(unit).view(-1, k) for g in self.guides)
        out = torch.full_like(logits, float("-inf"))
        return out.scatter(1, top.indices, (top.values + bonus).to(out.dtype))  # type: ignore[operator]


class SteeringVector(Control):
    """Add a fixed direction to every new token's residual state at one decoder layer."""

    name = "steering-vector"
    chat = False

    def __init__(self, direction: torch.Tensor, layer: int, scale: float) -> None:
        self.direction, self.scale = direction.float(), scale
        self.hidden_site = f"layer:{layer}"

    def edit_hidden(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return (h.float() + self.scale * self.direction).to(h.dtype)

    @classmethod
    @torch.no_grad()
    def from_contrast(
        cls,
        lm: LanguageModel,
        toward: Sequence[str],
        away: Sequence[str],
        layer: int,
        scale: float = 4.0,
        max_tokens: int = 64,
        batch_size: int = 16,
    ) -> SteeringVector:
        """v = mean state(toward) − mean state(away) at ``layer`` (over all real tokens), unit-normalised and
        multiplied by ``scale`` (in units of the layer's RMS state norm / sqrt(d))."""
        from lmcontrol import hf_adapter as hf

        def mean_state(texts: Sequence[str]) -> tuple[torch.Tensor, float]:
            total, count, norms = torch.zeros(lm.info.hidden_size), 0, []
            captured: list[torch.Tensor] = []

            def grab(h: torch.Tensor) -> torch.Tensor:
                captured.append(h.detach().float())
                return h

            for i in range(0, len(texts), batch_size):
                enc = lm.tokenizer(
                    list(texts[i : i + batch_size]),
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=max_tokens,
                )
                captured.clear()
                with hf.edit_layer_output(lm.model, layer, grab):
                    hf.decoder(lm.model)(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
                mask = enc["attention_mask"].bool()
                states = captured[0][mask]  # (N, d)
                total += states.sum(0)
                count += states.shape[0]
                norms.append(states.norm(dim=-1).mean().item())
            return total / max(count, 1), sum(norms) / max(len(norms), 1)

        if not toward or not away:
            raise LMControlError("a steering vector needs texts on both sides of the contrast")
        mu_t, norm_t = mean_state(toward)
        mu_a, norm_a = mean_state(away)
        diff = mu_t - mu_a
        unit = diff / diff.norm().clamp(min=1e-6)
        typical = 0.5 * (norm_t + norm_a) / lm.info.hidden_size**0.5
        return cls(unit * typical, layer, scale)
