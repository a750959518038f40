"""One batched decoding loop with KV cache, left padding and control hook points.

``generate(lm, prompts, config, controls)`` is the only decoding loop in lmcontrol; every method plugs into it
through ``lmcontrol.controls.Control``. Without controls, greedy output equals ``model.generate(do_sample=False)``
token for token (tests/test_generation.py checks it).

Per step the loop (1) runs the decoder on the new token with the KV cache, (2) lets hidden-state controls edit
the new token's state (after the final norm, or at a layer via a scoped forward hook), (3) applies the LM head,
(4) lets logits controls rewrite the logits, (5) picks the token (greedy, or temperature / top-k / top-p
sampling from a seeded generator), and (6) stops rows on EOS or a stop string.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from lmcontrol import LMControlError
from lmcontrol import hf_adapter as hf
from lmcontrol.controls import Control, Rows, SoftPrompt, StepContext, merge_soft_prompts
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
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise LMControlError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise LMControlError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise LMControlError(f"top_k must be >= 0, got {self.top_k}")
        if not (0 < self.top_p <= 1):
            raise LMControlError(f"top_p must be in (0, 1], got {self.top_p}")


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
# token choice


def choose_tokens(
    logits: torch.Tensor, config: GenerationConfig, temperature: float, gen: torch.Generator | None
):
    """Greedy argmax, or a sample after temperature, top-k and top-p filtering. logits: (B, V) -> (B,)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if config.top_k > 0:
        k = min(config.top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the mass before it already reaches top_p (always keep the best one)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= config.top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(1)


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
        past_key_values=prefill.cache,
        use_cache=True,
    )
    return out.last_hidden_state


def lm_logits(lm: LanguageModel, hidden: torch.Tensor) -> torch.Tensor:
    return hf.lm_head(lm.model)(hidden)


# ---------------------------------------------------------------------------------------------------------
# the loop


def _system_prompt(config: GenerationConfig, controls: Sequence[Control]) -> str | None:
    parts = [config.system] if config.system else []
    parts += [s for c in controls if (s := c.system_prompt())]
    return "\n\n".join(parts) if parts else None


def _parse_site(site: str, lm: LanguageModel) -> int | None:
    """None for the final-norm site, else the layer index."""
    if site in ("final", "final_norm"):
        return None
    if site.startswith("layer:"):
        try:
            layer = int(site.split(":", 1)[1])
        except ValueError:
            raise LMControlError(f"bad hidden site '{site}' (use 'final' or 'layer:L')") from None
        if not -lm.info.num_layers <= layer < lm.info.num_layers:
            raise LMControlError(f"hidden site '{site}': the model has {lm.info.num_layers} layers")
        return layer % lm.info.num_layers
    raise LMControlError(f"bad hidden site '{site}' (use 'final' or 'layer:L')")


def tokenize_prompts(lm: LanguageModel, texts: list[str], chat: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (input_ids, attention_mask). The chat template already holds special tokens."""
    enc = lm.tokenizer(
        texts, return_tensors="pt", padding=True, add_special_tokens=not (chat and lm.has_chat_template)
    )
    return enc["input_ids"], enc["attention_mask"]


@torch.no_grad()
def generate(
    lm: LanguageModel,
    prompts: Sequence[str],
    config: GenerationConfig | None = None,
    controls: Sequence[Control] = (),
    row_meta: Sequence[dict[str, Any]] | None = None,
) -> GenerationOutput:
    """Generate a continuation for each prompt under the given controls.

    Args:
        lm: the model bundle from ``lmcontrol.models.load_lm``.
        prompts: user prompts (non-empty strings); with ``config.chat`` they are wrapped in the chat template.
        config: decoding settings.
        controls: controls applied together (see ``lmcontrol.controls``).
        row_meta: optional per-prompt dicts handed to controls (e.g. ``{"prefix": "e2e"}`` for a prefix library).

    Runs under ``torch.no_grad``; a control that needs gradients (RE-Control) enables them locally.
    """
    config = config or GenerationConfig()
    prompts = list(prompts)
    if not prompts:
        raise LMControlError("no prompts given")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise LMControlError(f"prompt {i} is empty")
    meta = [dict(m) for m in row_meta] if row_meta is not None else [{} for _ in prompts]
    if len(meta) != len(prompts):
        raise LMControlError(f"row_meta has {len(meta)} entries for {len(prompts)} prompts")
    t_start = time.perf_counter()
    for c in controls:
        c.setup(lm)

    # best-of-N expands every prompt into N rows (row-major: prompt0 x N, prompt1 x N, ...)
    n_cand = max([c.num_candidates for c in controls] + [1])
    temperature = config.temperature
    if n_cand > 1 and temperature == 0:
        temperature = max(c.candidate_temperature for c in controls if c.num_candidates > 1)
    system = _system_prompt(config, controls)
    # a control trained on raw text (chat=False) turns the template off for the whole call
    chat = config.chat and not any(c.chat is False for c in controls)
    texts = [lm.format_prompt(p, chat=chat, system=system) for p in prompts]
    idx = [i for i in range(len(prompts)) for _ in range(n_cand)]
    rows = Rows(
        prompts=[prompts[i] for i in idx],
        texts=[texts[i] for i in idx],
        prompt_index=idx,
        meta=[meta[i] for i in idx],
    )
    input_ids, attention_mask = tokenize_prompts(lm, rows.texts, chat)
    batch = input_ids.shape[0]

    soft_parts = [sp for c in controls if (sp := c.soft_prompt(rows)) is not None]
    embeds_prompt, kv_prompt = merge_soft_prompts(soft_parts)
    n_virtual = sum(int(p.mask.shape[1]) for p in soft_parts)
    longest = int(attention_mask.sum(1).max()) + n_virtual + config.max_new_tokens
    if longest > lm.info.max_positions:
        raise LMControlError(
            f"prompt too long: {int(attention_mask.sum(1).max())} tokens + {n_virtual} virtual + "
            f"{config.max_new_tokens} new exceeds the model's context of {lm.info.max_positions}"
        )

    final_editors = []
    layer_editors: dict[int, list[Control]] = {}
    for c in controls:
        if c.uses_hidden:
            layer = _parse_site(c.hidden_site or "final", lm)
            if layer is None:
                final_editors.append(c)
            else:
                layer_editors.setdefault(layer, []).append(c)
    logit_procs = [c for c in controls if c.uses_logits]
    gen = torch.Generator().manual_seed(config.seed) if config.seed is not None else None

    eos_ids = _eos_ids(lm)
    pad_id = int(lm.tokenizer.pad_token_id)
    finished = torch.zeros(batch, dtype=torch.bool)
    generated = torch.empty(batch, 0, dtype=torch.long)
    all_ids = input_ids
    tok_mask = attention_mask
    ctx_ref: dict[str, StepContext] = {}

    def layer_fn(editors: list[Control]):
        def fn(hidden: torch.Tensor) -> torch.Tensor:  # (B, T, d): edit the last (new) position only
            h = hidden[:, -1, :]
            for c in editors:
                h = c.edit_hidden(h, ctx_ref["ctx"])
            hidden = hidden.clone()
            hidden[:, -1, :] = h
            return hidden

        return fn

    with contextlib.ExitStack() as stack:
        for layer, editors in layer_editors.items():
            stack.enter_context(hf.edit_layer_output(lm.model, layer, layer_fn(editors)))

        prefill = build_prefill(lm, input_ids, attention_mask, embeds_prompt, kv_prompt)
        cache = prefill.cache
        full_mask = prefill.attention_mask
        last_pos = prefill.position_ids[:, -1]
        first_token_seconds = 0.0
        step_inputs: dict[str, torch.Tensor] = {
            "inputs_embeds": prefill.inputs_embeds,
            "position_ids": prefill.position_ids,
        }
        for step in range(config.max_new_tokens):
            ctx = StepContext(step, lm, rows, all_ids, tok_mask, finished)
            ctx_ref["ctx"] = ctx
            out = hf.decoder(lm.model)(
                **step_inputs, attention_mask=full_mask, past_key_values=cache, use_cache=True
            )
            h = out.last_hidden_state[:, -1, :]  # (B, d) the new token's state after the final norm
            for c in final_editors:
                h = c.edit_hidden(h, ctx)
            logits = lm_logits(lm, h).float()  # (B, V)
            if logit_procs:
                ctx.lookahead = _lookahead_fn(lm, cache, full_mask, last_pos)
                for c in logit_procs:
                    logits = c.process_logits(logits, ctx)
                ctx.lookahead = None
            next_ids = choose_tokens(logits, config, temperature, gen)
            next_ids = torch.where(finished, torch.full_like(next_ids, pad_id), next_ids)
            generated = torch.cat([generated, next_ids[:, None]], dim=1)
            all_ids = torch.cat([all_ids, next_ids[:, None]], dim=1)
            tok_mask = torch.cat([tok_mask, torch.ones(batch, 1, dtype=tok_mask.dtype)], dim=1)
            full_mask = torch.cat([full_mask, torch.ones(batch, 1, dtype=full_mask.dtype)], dim=1)
            if step == 0:
                first_token_seconds = time.perf_counter() - t_start
            finished |= torch.isin(next_ids, eos_ids)
            if config.stop:
                finished |= _hit_stop(lm, generated, config.stop)
            if bool(finished.all()):
                break
            last_pos = last_pos + 1
            step_inputs = {"input_ids": next_ids[:, None], "position_ids": last_pos[:, None]}

    texts_out, ids_out = _finalise(lm, generated, eos_ids, config.stop)
    new_tokens = sum(len(t) for t in ids_out)
    candidates = None
    if n_cand > 1:
        grouped = [texts_out[i * n_cand : (i + 1) * n_cand] for i in range(len(prompts))]
        grouped_ids = [ids_out[i * n_cand : (i + 1) * n_cand] for i in range(len(prompts))]
        choice = [0] * len(prompts)
        for c in controls:
            if c.uses_select:
                choice = c.select(prompts, grouped)
        texts_out = [g[j] for g, j in zip(grouped, choice, strict=True)]
        ids_out = [g[j] for g, j in zip(grouped_ids, choice, strict=True)]
        candidates = grouped
    return GenerationOutput(
        prompts=prompts,
        texts=texts_out,
        token_ids=ids_out,
        seconds=time.perf_counter() - t_start,
        first_token_seconds=first_token_seconds,
        new_tokens=new_tokens,
        candidates=candidates,
    )


def _eos_ids(lm: LanguageModel) -> torch.Tensor:
    ids = set()
    eos = getattr(lm.model.generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(e) for e in eos)
    if lm.tokenizer.eos_token_id is not None:
        ids.add(int(lm.tokenizer.eos_token_id))
    return torch.tensor(sorted(ids), dtype=torch.long)


def _hit_stop(lm: LanguageModel, generated: torch.Tensor, stop: tuple[str, ...]) -> torch.Tensor:
    # Decode only a tail window: a stop string can only complete within the last few tokens.
    tail = generated[:, -16:]
    texts = lm.tokenizer.batch_decode(tail, skip_special_tokens=True)
    return torch.tensor([any(s in t for s in stop) for t in texts], dtype=torch.bool)


def _finalise(
    lm: LanguageModel, generated: torch.Tensor, eos_ids: torch.Tensor, stop: tuple[str, ...]
) -> tuple[list[str], list[list[int]]]:
    """Cut each row at its first EOS (and stop string) and decode it."""
    eos = set(eos_ids.tolist())
    texts, ids = [], []
    for row in generated.tolist():
        cut = len(row)
        for j, t in enumerate(row):
            if t in eos:
                cut = j
                break
        row = row[:cut]
        text = lm.tokenizer.decode(row, skip_special_tokens=True)
        if stop:
            hits = [text.find(s) for s in stop if s in text]
            if hits:
                text = text[: min(hits)]
                # keep ids consistent with the cut text
                while row and len(lm.tokenizer.decode(row, skip_special_tokens=True)) > len(text):
                    row = row[:-1]
        texts.append(text)
        ids.append(row)
    return texts, ids


def _lookahead_fn(lm: LanguageModel, cache: Any, full_mask: torch.Tensor, last_pos: torch.Tensor):
    """Build ``lookahead(candidate_ids (B, k)) -> (B, k, d)`` over a repeated copy of the cache."""

    def lookahead(candidate_ids: torch.Tensor) -> torch.Tensor:
        batch, k = candidate_ids.shape
        rep_cache = hf.repeat_cache(lm.model, cache, k)
        mask = torch.cat(
            [full_mask.repeat_interleave(k, 0), torch.ones(batch * k, 1, dtype=full_mask.dtype)], 1
        )
        pos = (last_pos + 1).repeat_interleave(k, 0)[:, None]
        out = hf.decoder(lm.model)(
            input_ids=candidate_ids.reshape(batch * k, 1),
            attention_mask=mask,
            position_ids=pos,
            past_key_values=rep_cache,
            use_cache=True,
        )
        return out.last_hidden_state[:, -1, :].reshape(batch, k, -1)  # (B, k, d)

    return lookahead
