"""Fluency: perplexity of a continuation given its prompt under a judge causal LM.

``ppl(x | c) = exp(-(1/|x|) Σ_t log p(x_t | c, x_<t))`` — only continuation tokens are scored; the prompt is
context (its tokens are masked out of the loss), as in DExperts (Liu et al. 2021) and RealToxicityPrompts-
style evaluations, which use a larger judge (GPT-2 XL) than the generator. The default judge here is the
embedded SmolLM2-135M-Instruct; any HF causal LM id or path works (``--judge``).

Prompt and continuation are tokenised separately and concatenated, so the boundary is the same for every
method. With ``chat=True`` the judge sees the prompt inside its chat template (the continuation is then the
assistant reply), which is the right reading for continuations generated with the chat template. Rows are
scored by ``lmcontrol.scoring`` (left-padded contexts, explicit position ids, so padding never shifts
positions); a context longer than the judge's window is cut from the left.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel


@dataclasses.dataclass(frozen=True)
class FluencyConfig:
    judge: str | None = None  # HF id / path of the judge LM; None = the embedded model
    batch_size: int = 8
    chat: bool = False  # wrap the prompt in the judge's chat template
    max_length: int | None = None  # total tokens per row (default: the judge's context)


def _row_ids(
    lm: LanguageModel, prompt: str, continuation: str, chat: bool, max_length: int
) -> tuple[list[int], list[int]]:
    """Token ids of the context and of the continuation, together at most ``max_length``."""
    tok = lm.tokenizer
    templated = chat and lm.has_chat_template
    context = lm.format_prompt(prompt, chat=True) if templated else prompt
    ctx_ids = tok(context, add_special_tokens=not templated)["input_ids"]
    cont_ids = tok(continuation, add_special_tokens=False)["input_ids"][: max_length - 1]
    keep_ctx = max(1, max_length - len(cont_ids))
    if not ctx_ids:  # an empty prompt: condition on BOS/EOS so the first token is still scored
        ctx_ids = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
    return ctx_ids[-keep_ctx:], cont_ids


def continuation_nll(
    lm: LanguageModel,
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    chat: bool = False,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[float, int]]:
    """Per row, (summed negative log-likelihood in nats, number of continuation tokens) under ``lm``."""
    import torch

    from lmcontrol.scoring import collate, target_token_logprobs

    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    max_length = max_length or lm.info.max_positions
    pad_id = int(lm.tokenizer.pad_token_id)
    out: list[tuple[float, int]] = []
    for start in range(0, len(prompts), batch_size):
        rows = [
            _row_ids(lm, p, c, chat, max_length)
            for p, c in zip(
                prompts[start : start + batch_size], continuations[start : start + batch_size], strict=True
            )
        ]
        batch = collate([ctx for ctx, _ in rows], [cont for _, cont in rows], pad_id)
        with torch.no_grad():
            logp = target_token_logprobs(lm, batch).cpu()  # (N,) row-major
        counts = batch.num_tokens.tolist()
        out += [(-float(lp.sum()), k) for lp, k in zip(logp.split(counts), counts, strict=True)]
        if progress is not None:
            progress(len(rows))
    return out


def perplexities(
    prompts: Sequence[str],
    continuations: Sequence[str],
    config: FluencyConfig = FluencyConfig(),
    lm: LanguageModel | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Per-row perplexity of each continuation given its prompt (NaN for an empty continuation)."""
    from lmcontrol.models import load_lm

    lm = lm if lm is not None else load_lm(config.judge)
    scored = continuation_nll(
        lm,
        prompts,
        continuations,
        chat=config.chat,
        batch_size=config.batch_size,
        max_length=config.max_length,
        progress=progress,
    )
    return [math.exp(s / k) if k else float("nan") for s, k in scored]
