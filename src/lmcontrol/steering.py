"""Generic controls every method builds on: a system prompt, best-of-N, a steering vector, top-k re-scoring.

- ``SystemPrompt`` — prompting: a system message, joined with any other controls' (``--control system[:TEXT]``).
- ``BestOfN`` — sample N candidates per prompt, keep the one a reward scores highest
  (``--control best-of:N[,reward=NAME][,temperature=T]``).
- ``SteeringVector`` — activation addition (Turner et al. 2023; the mean-difference variant of Rimsky et al.
  2024): h ← h + s·v on every new token's state at one site (``"final"`` or ``"layer:L"``).
  ``from_contrast`` builds v = mean state(toward texts) − mean state(away texts). RE-Control's static
  representation editing (``recontrol.baselines.StaticEdit``) is one with a reward-contrast direction.
- ``TopKRescoring`` — keep the top-k next tokens, add w · score(candidate) to each and drop the rest: FUDGE
  (Yang & Klein 2021, eq. 3: log p(x | prefix) + w log p(a | prefix + x)) and prefix-scorer controlled decoding
  (Mudgal et al. 2023: log p(z | x, y) + β V([x, y, z])) are both this with a different scorer
  (``dglm.baselines.ProbeFudge``, ``diffusion_lm.control.FudgeControl``, ``recontrol.baselines.ControlledDecoding``).

Registered as ``system`` and ``best-of`` by ``lmcontrol.steering_plugin``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from lmcontrol import LMControlError
from lmcontrol.controls import Control, ControlSpec, StepContext

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

HH_SYSTEM_PROMPT = (
    "You are a helpful, honest and harmless assistant. Answer the user's question helpfully and politely. "
    "Never help with anything dangerous, illegal, unethical or hurtful; instead, briefly explain why "
    "and offer a safe alternative."
)
Reward = Callable[[list[str], list[str]], list[float]]  # (prompts, responses) -> scores
CandidateScorer = Callable[[torch.Tensor, StepContext], torch.Tensor]  # (candidates (B, k), ctx) -> (B, k)
LM_TERMS = ("logits", "logprobs", "tiebreak")


# ---------------------------------------------------------------------------------------------------------
# prompting and best-of-N


class SystemPrompt(Control):
    """Prompting: a system message joined with any other controls' system messages."""

    name = "system"

    def __init__(self, text: str = HH_SYSTEM_PROMPT) -> None:
        self.text = text

    def system_prompt(self) -> str | None:
        return self.text


def system_from_spec(spec: ControlSpec, lm: LanguageModel) -> SystemPrompt:
    """``system`` (the default helpful-and-harmless prompt) or ``system:TEXT`` (commas in TEXT are kept)."""
    del lm
    text = spec.text.partition(":")[2].strip()
    return SystemPrompt(text or HH_SYSTEM_PROMPT)


class BestOfN(Control):
    """Sample N candidates per prompt and keep the one with the highest reward."""

    name = "best-of"

    def __init__(self, n: int, reward: Reward, temperature: float = 0.7) -> None:
        self.num_candidates = n
        self.reward = reward
        self.candidate_temperature = temperature

    def select(self, prompts: list[str], candidates: list[list[str]]) -> list[int]:
        flat_p = [p for p, c in zip(prompts, candidates, strict=True) for _ in c]
        flat_c = [x for c in candidates for x in c]
        scores = self.reward(flat_p, flat_c)
        choice, i = [], 0
        for c in candidates:
            part = scores[i : i + len(c)]
            choice.append(max(range(len(c)), key=part.__getitem__))
            i += len(c)
        return choice


def best_of_from_spec(spec: ControlSpec, lm: LanguageModel) -> BestOfN:
    """``best-of:N[,reward=NAME][,temperature=T]`` (default reward: hh)."""
    from lmcontrol.eval.reward import load_reward

    del lm
    spec.check_keys(["reward", "temperature"])
    try:
        n = int(spec.args[0]) if spec.args else 4
    except ValueError:
        raise LMControlError(f"--control {spec.text}: N must be an integer, got {spec.args[0]!r}") from None
    if n < 1:
        raise LMControlError(f"--control {spec.text}: N must be >= 1, got {n}")
    return BestOfN(
        n,
        load_reward(spec.str("reward", "hh") or "hh"),
        temperature=spec.float("temperature", 0.7, positive=True),
    )


# ---------------------------------------------------------------------------------------------------------
# steering vector


class SteeringVector(Control):
    """Add ``scale * direction`` (d,) to every new token's state at ``site`` (``"final"`` or ``"layer:L"``)."""

    name = "steering-vector"

    def __init__(self, direction: torch.Tensor, scale: float = 1.0, site: str = "final") -> None:
        self.direction, self.scale = direction.float(), scale
        self.hidden_site = site

    def edit_hidden(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return (h.float() + self.scale * self.direction.to(h.device)).to(h.dtype)

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
        """v = mean state(toward) − mean state(away) at the output of decoder layer ``layer`` (over all real
        tokens), unit-normalised and multiplied by the layer's typical state norm / sqrt(d); the edit adds
        ``scale`` v."""
        from lmcontrol import hf_adapter as hf

        def mean_state(texts: Sequence[str]) -> tuple[torch.Tensor, float]:
            total, count, norms = torch.zeros(lm.info.hidden_size), 0, []
            captured: list[torch.Tensor] = []

            def grab(h: torch.Tensor) -> torch.Tensor:
                captured.append(h.detach().float().cpu())
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
                    hf.decoder(lm.model)(
                        input_ids=enc["input_ids"].to(lm.model.device),
                        attention_mask=enc["attention_mask"].to(lm.model.device),
                    )
                states = captured[0][enc["attention_mask"].bool()]  # (N, d) real tokens only
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
        return cls(unit * typical, scale=scale, site=f"layer:{layer}")


# ---------------------------------------------------------------------------------------------------------
# top-k re-scoring


def continuation_texts(candidates: torch.Tensor, ctx: StepContext) -> list[str]:
    """The new text of each row followed by each candidate token (B·k strings, row-major), special tokens
    dropped: what a prefix scorer reads."""
    b, k = candidates.shape
    so_far = ctx.input_ids[:, ctx.input_ids.shape[1] - ctx.step :].cpu()  # (B, step) generated tokens
    rows = torch.cat([so_far.repeat_interleave(k, 0), candidates.reshape(-1, 1).cpu()], dim=1)  # (B·k, step+1)
    return ctx.lm.tokenizer.batch_decode(rows, skip_special_tokens=True)


class TopKRescoring(Control):
    """Keep the top-k next tokens, re-score each as lm_term + weight · score(candidate), drop every other token.

    Args:
        scorer: ``scorer(candidates (B, k), ctx) -> (B, k)``: the bonus of each candidate next token.
        top_k: candidates per step.
        weight: w, the scorer's weight.
        lm_term: the LM's part of the score: ``logits`` (the raw logit), ``logprobs`` (log-softmax over the
            vocabulary; top-k is taken on it) or ``tiebreak`` (10⁻³ × log-softmax over the k candidates only: the
            scorer decides, the LM breaks ties).
        always: token ids scored even when outside the top-k (e.g. EOS for a length target).
        skip_finished: leave rows that already ended untouched.
    """

    name = "top-k"

    def __init__(
        self,
        scorer: CandidateScorer,
        *,
        top_k: int,
        weight: float = 1.0,
        lm_term: str = "logits",
        always: Sequence[int] = (),
        skip_finished: bool = False,
    ) -> None:
        if top_k < 1:
            raise LMControlError(f"top-k must be >= 1, got {top_k}")
        if lm_term not in LM_TERMS:
            raise LMControlError(f"unknown lm_term '{lm_term}' (known: {', '.join(LM_TERMS)})")
        self.scorer, self.top_k, self.weight, self.lm_term = scorer, top_k, weight, lm_term
        self.always, self.skip_finished = tuple(always), skip_finished

    def process_logits(self, logits: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """(B, V) next-token logits → re-scored logits, −inf outside the candidates."""
        b, v = logits.shape
        base = logits.float().log_softmax(-1) if self.lm_term == "logprobs" else logits
        top = base.topk(min(self.top_k, v), dim=-1)  # values / indices (B, k)
        cand, lm_part = top.indices, top.values
        if self.always:  # a repeat of a top-k token is harmless: both copies get the same score
            extra = torch.tensor(self.always, device=cand.device).expand(b, -1)
            cand = torch.cat([cand, extra], dim=1)  # (B, k + a)
            lm_part = base.gather(1, cand)
        if self.lm_term == "tiebreak":
            lm_part = 1e-3 * lm_part.log_softmax(-1)
        scores = lm_part + self.weight * self.scorer(cand, ctx)  # (B, k)
        out = torch.full_like(logits, float("-inf")).scatter(1, cand, scores.to(logits.dtype))
        if self.skip_finished:
            out = torch.where(ctx.finished.to(out.device)[:, None], logits, out)
        return out
