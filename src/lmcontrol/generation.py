"""``generate(lm, prompts, config, controls)``: a batch of prompts through the engine, as one call.

Every decoding in lmcontrol runs through ``lmcontrol.engine.Engine``; this module keeps the one-call interface
the CLI, the bench harness and the methods use (submit every prompt, run until done, collect), plus the shared
prefill layout trainers use so that training and decoding see the same positions. Without controls, greedy output
equals ``model.generate(do_sample=False)`` token for token (tests/test_generation.py checks it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import torch

from lmcontrol import LMControlError
from lmcontrol import hf_adapter as hf
from lmcontrol.controls import Control, SoftPrompt
from lmcontrol.engine import Engine, Request, SamplingParams
from lmcontrol.engine.sampling import repeat_seed
from lmcontrol.engine.state import parse_site  # noqa: F401  (the hidden-site grammar, re-exported)
from lmcontrol.models import LanguageModel


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int | None = 0
    stop: tuple[str, ...] = ()
    chat: bool = True  # wrap prompts in the model's chat template (if it has one)
    system: str | None = None  # system message (joined with controls' system prompts)

    def __post_init__(self) -> None:
        self.sampling_params()  # validates (one clear LMControlError per bad value)

    def sampling_params(self) -> SamplingParams:
        """The engine's per-request settings for this config."""
        return SamplingParams(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
            seed=self.seed, stop=tuple(self.stop),
        )


@dataclasses.dataclass
class GenerationOutput:
    """Texts and token ids per input prompt, plus timing of the whole call."""

    prompts: list[str]
    texts: list[str]
    token_ids: list[list[int]]
    seconds: float  # wall time of the call
    first_token_seconds: float  # prefill + first token (time to first token)
    new_tokens: int  # tokens generated over all rows (best-of-N candidates included)
    candidates: list[list[str]] | None = None  # best-of-N: every candidate per prompt

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def seconds_per_sample(self) -> float:
        return self.seconds / max(len(self.texts), 1)


# ---------------------------------------------------------------------------------------------------------
# the shared forward (also used by trainers so that training and decoding see the same layout)


@dataclasses.dataclass
class Prefill:
    """Tensors describing one batch after soft prompts are laid out.

    Layout per row: [kv-prefix (in the cache) | embeds soft prompt | left pad | prompt tokens].
    ``position_ids`` count only real (masked-in) positions of embeds + tokens, so a row without a soft prompt
    sees exactly the positions it would see alone. KV prefixes carry no position (their keys are learned
    directly), which keeps a prefix usable at any prompt length.
    """

    inputs_embeds: torch.Tensor  # (B, m_e + T, d)
    attention_mask: torch.Tensor  # (B, m_kv + m_e + T) — what attention sees, kv prefix included
    position_ids: torch.Tensor  # (B, m_e + T)
    cache: Any


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded mask (B, T): cumsum - 1, pads set to 1 (as transformers does)."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def build_prefill(
    lm: LanguageModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    embeds_prompt: SoftPrompt | None = None,
    kv_prompt: SoftPrompt | None = None,
) -> Prefill:
    """Lay out soft prompts, tokens, mask, positions and the (possibly pre-filled) cache for one forward."""
    embeds = hf.input_embeddings(lm.model)(input_ids)  # (B, T, d)
    mask = attention_mask.long()
    if embeds_prompt is not None:
        embeds = torch.cat([embeds_prompt.embeds.to(embeds.dtype), embeds], dim=1)  # (B, m_e + T, d)
        mask = torch.cat([embeds_prompt.mask.long(), mask], dim=1)
    position_ids = positions_from_mask(mask)
    cache = hf.make_cache(lm.model, kv_prompt.kv if kv_prompt is not None else None)
    full_mask = mask if kv_prompt is None else torch.cat([kv_prompt.mask.long(), mask], dim=1)
    return Prefill(inputs_embeds=embeds, attention_mask=full_mask, position_ids=position_ids, cache=cache)


def forward_hidden(lm: LanguageModel, prefill: Prefill) -> torch.Tensor:
    """Run the decoder on a prefill; returns final-norm hidden states (B, m_e + T, d). Gradients flow to the
    soft prompt tensors if they require grad (used by prefix / prompt-generator trainers)."""
    out = hf.decoder(lm.model)(
        inputs_embeds=prefill.inputs_embeds,
        attention_mask=prefill.attention_mask,
        position_ids=prefill.position_ids,
        cache=prefill.cache,
        use_cache=True,
    )
    return out.last_hidden_state


def lm_logits(lm: LanguageModel, hidden: torch.Tensor) -> torch.Tensor:
    return hf.lm_head(lm.model)(hidden)


def tokenize_prompts(lm: LanguageModel, texts: list[str], chat: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (input_ids, attention_mask). The chat template already holds special tokens."""
    enc = lm.tokenizer(
        texts, return_tensors="pt", padding=True, add_special_tokens=not (chat and lm.has_chat_template)
    )
    return enc["input_ids"], enc["attention_mask"]


# ---------------------------------------------------------------------------------------------------------
# one call = one engine run


def check_prompts(
    prompts: Sequence[str], row_meta: Sequence[dict[str, Any]] | None = None
) -> tuple[list[str], list[dict[str, Any]]]:
    """Non-empty prompts and one meta dict per prompt (default empty), else a one-line ``LMControlError``."""
    prompts = list(prompts)
    if not prompts:
        raise LMControlError("no prompts given")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise LMControlError(f"prompt {i} is empty")
    meta = [dict(m) for m in row_meta] if row_meta is not None else [{} for _ in prompts]
    if len(meta) != len(prompts):
        raise LMControlError(f"row_meta has {len(meta)} entries for {len(prompts)} prompts")
    return prompts, meta


def generate(
    lm: LanguageModel,
    prompts: Sequence[str],
    config: GenerationConfig | None = None,
    controls: Sequence[Control] = (),
    row_meta: Sequence[dict[str, Any]] | None = None,
) -> GenerationOutput:
    """Generate a continuation for each prompt under the given controls (all prompts in one batch).

    Args:
        lm: the model bundle from ``lmcontrol.models.load_lm``.
        prompts: user prompts (non-empty strings); with ``config.chat`` they are wrapped in the chat template.
        config: decoding settings (shared by every prompt; each prompt gets its own seeded generator, so its
            sample does not depend on the other prompts; a prompt given k times gets k distinct samples).
        controls: controls applied together (see ``lmcontrol.controls``).
        row_meta: optional per-prompt dicts handed to controls (e.g. ``{"prefix": "e2e"}`` for a prefix library).
    """
    config = config or GenerationConfig()
    prompts, meta = check_prompts(prompts, row_meta)
    t_start = time.perf_counter()
    n_cand = max([c.num_candidates for c in controls] + [1])
    engine = Engine(lm, max_batch_size=len(prompts) * n_cand, max_queue=len(prompts))
    params = config.sampling_params()
    copies: dict[str, int] = {}  # a prompt repeated in the call samples with a seed derived from (seed, copy)
    handles = []
    for i, (p, m) in enumerate(zip(prompts, meta, strict=True)):
        k = copies[p] = copies.get(p, -1) + 1
        row_params = dataclasses.replace(params, seed=repeat_seed(params.seed, k)) if k else params
        request = Request(p, params=row_params, controls=controls, chat=config.chat, system=config.system, meta=m)
        handles.append(engine.submit(request, index=i))
    engine.run_until_idle()
    outs = [h.result() for h in handles]
    for o in outs:
        if o.error:
            raise LMControlError(o.error)
    first = min(h.submitted + o.first_token_seconds for h, o in zip(handles, outs, strict=True)) - t_start
    return GenerationOutput(
        prompts=prompts,
        texts=[o.text for o in outs],
        token_ids=[o.token_ids for o in outs],
        seconds=time.perf_counter() - t_start,
        first_token_seconds=first,
        new_tokens=sum(o.completion_tokens for o in outs),
        candidates=[o.candidates or [] for o in outs] if n_cand > 1 else None,
    )
