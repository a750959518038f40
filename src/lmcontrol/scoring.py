"""Teacher-forced scoring: per-token log-probs of a target y given a prompt x, under the same controls decoding uses.

``score(lm, prompts, targets, controls)`` returns ``log p(y_t | x, y_<t)`` for every target token in one batched
forward per batch. The prompt is formatted exactly as ``generation.generate`` formats it (chat template, system
message joined with the controls' system prompts, ``chat=False`` when a control needs raw text) and the target's
tokens are appended right after it, as the model would have generated them. Soft prompts (embeds and KV
prefixes) come from ``Control.soft_prompt(rows)``; hidden-state edits (``"final"`` and ``"layer:L"``) and logits
processors run once per target step with the ``StepContext`` the decoding loop would give them (their
``lookahead_hidden`` included, which, as in the engine, sees no layer edit at the candidate position), so
``score`` of a greedy output equals the log-probs the loop assigned to it.

Layout of one batch (columns of ``input_ids``)::

    [left pad | prompt tokens | target tokens | right pad]      (B, T_p + R)
                            ^ column T_p - 1 + s predicts target token s (step s of the decoding loop)

Prompts are left-padded to a common length T_p exactly as ``generation.tokenize_prompts`` pads them, so step s
sits in one column for every row, as in decoding; right padding is masked out and, the model being causal,
never seen by a real position. Trainers use the lower layer: ``collate`` (token ids -> ``TargetBatch``),
``target_logits`` / ``target_loss`` (differentiable in soft-prompt tensors).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lmcontrol import LMControlError
from lmcontrol import hf_adapter as hf
from lmcontrol.controls import Control, Rows, SoftPrompt, StepContext, merge_soft_prompts
from lmcontrol.generation import (
    build_prefill,
    check_prompts,
    forward_hidden,
    lm_logits,
    parse_site,
    tokenize_prompts,
)
from lmcontrol.models import LanguageModel

Target = str | Sequence[int]  # text (tokenised without special tokens) or token ids


@dataclasses.dataclass
class TargetBatch:
    """Prompts and targets laid out for one teacher-forced forward (see the module docstring).

    Attributes:
        input_ids: (B, T_p + R) ``[left pad | prompt | target | right pad]``.
        attention_mask: (B, T_p + R) 1 on prompt and target tokens.
        prompt_len: T_p, the padded prompt width; target slot s is column ``T_p + s``.
        target_mask: (B, R) bool, which target slots hold a token.
        rows: what controls see of the batch (prompts, formatted texts, per-row meta).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_len: int
    target_mask: torch.Tensor
    rows: Rows

    @property
    def targets(self) -> torch.Tensor:
        """(B, R) target token ids (pad where ``target_mask`` is False)."""
        return self.input_ids[:, self.prompt_len :]

    @property
    def num_tokens(self) -> torch.Tensor:
        """(B,) target tokens per row."""
        return self.target_mask.sum(1)

    def to(self, device: torch.device | str) -> TargetBatch:
        return dataclasses.replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            target_mask=self.target_mask.to(device),
        )


@dataclasses.dataclass
class ScoreOutput:
    """Per-row log-probs of each target (natural log, nats).

    Attributes:
        token_logprobs: per row, (n_i,) log p(y_t | x, y_<t) on the CPU in float32.
        token_ids: per row, the n_i scored target token ids.
        sum_logprobs: (B,) log p(y | x).
        mean_logprobs: (B,) per-token mean (NaN for an empty target).
        num_tokens: (B,) n_i.
    """

    token_logprobs: list[torch.Tensor]
    token_ids: list[list[int]]
    sum_logprobs: torch.Tensor
    mean_logprobs: torch.Tensor
    num_tokens: torch.Tensor


# ---------------------------------------------------------------------------------------------------------
# encoding


def collate(
    prompt_ids: Sequence[Sequence[int]],
    target_ids: Sequence[Sequence[int]],
    pad_id: int,
    rows: Rows | None = None,
) -> TargetBatch:
    """Lay token ids out as ``[left pad | prompt | target | right pad]`` (the one left-padded target batching)."""
    if len(prompt_ids) != len(target_ids):
        raise LMControlError(f"{len(prompt_ids)} prompts but {len(target_ids)} targets")
    if not prompt_ids:
        raise LMControlError("no prompts given")
    batch = len(prompt_ids)
    t_p = max(len(p) for p in prompt_ids)
    r = max(len(t) for t in target_ids)
    if t_p == 0:
        raise LMControlError("a prompt must have at least one token (the first target token is predicted from it)")
    input_ids = torch.full((batch, t_p + r), pad_id, dtype=torch.long)  # (B, T_p + R)
    mask = torch.zeros(batch, t_p + r, dtype=torch.long)
    target_mask = torch.zeros(batch, r, dtype=torch.bool)  # (B, R)
    for i, (p, t) in enumerate(zip(prompt_ids, target_ids, strict=True)):
        if not p:
            raise LMControlError(f"prompt {i} has no tokens")
        input_ids[i, t_p - len(p) : t_p] = torch.tensor(list(p), dtype=torch.long)
        input_ids[i, t_p : t_p + len(t)] = torch.tensor(list(t), dtype=torch.long)
        mask[i, t_p - len(p) : t_p + len(t)] = 1
        target_mask[i, : len(t)] = True
    if rows is None:
        rows = Rows(prompts=[""] * batch, texts=[""] * batch, prompt_index=list(range(batch)), meta=[{}] * batch)
    return TargetBatch(input_ids, mask, t_p, target_mask, rows)


def prompt_settings(
    controls: Sequence[Control], chat: bool, system: str | None
) -> tuple[bool, str | None]:
    """(chat, system) as the decoding loop derives them: a control trained on raw text turns the template off;
    the call's system message is joined with the controls' system prompts."""
    parts = [system] if system else []
    parts += [s for c in controls if (s := c.system_prompt())]
    return chat and not any(c.chat is False for c in controls), ("\n\n".join(parts) if parts else None)


def target_token_ids(lm: LanguageModel, target: Target, append_eos: bool = False) -> list[int]:
    """A target's token ids: text is tokenised without special tokens (as a reply follows the prompt)."""
    if isinstance(target, str):
        ids = list(lm.tokenizer(target, add_special_tokens=False)["input_ids"])
    else:
        ids = [int(t) for t in target]
    return ids + [int(lm.tokenizer.eos_token_id)] if append_eos else ids


def check_inputs(
    prompts: Sequence[str], targets: Sequence[Target], row_meta: Sequence[dict[str, Any]] | None
) -> tuple[list[str], list[Target], list[dict[str, Any]]]:
    """Non-empty prompts, one target and one meta dict (default empty) per prompt; else one-line errors."""
    prompts, targets = list(prompts), list(targets)
    if len(prompts) != len(targets):
        raise LMControlError(f"{len(prompts)} prompts but {len(targets)} targets")
    prompts, meta = check_prompts(prompts, row_meta)
    return prompts, targets, meta


def encode(
    lm: LanguageModel,
    prompts: Sequence[str],
    targets: Sequence[Target],
    controls: Sequence[Control] = (),
    *,
    chat: bool = True,
    system: str | None = None,
    append_eos: bool = False,
    row_meta: Sequence[dict[str, Any]] | None = None,
    prompt_index: Sequence[int] | None = None,
) -> TargetBatch:
    """Format prompts as ``generate`` does, tokenise them as it does (left padded) and append the targets."""
    prompts, targets, meta = check_inputs(prompts, targets, row_meta)
    chat, system = prompt_settings(controls, chat, system)
    texts = [lm.format_prompt(p, chat=chat, system=system) for p in prompts]
    ids, mask = tokenize_prompts(lm, texts, chat)  # (B, T_p) left padded, exactly as decoding
    prompt_ids = [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
    target_ids = [target_token_ids(lm, t, append_eos) for t in targets]
    rows = Rows(
        prompts=prompts,
        texts=texts,
        prompt_index=list(prompt_index) if prompt_index is not None else list(range(len(prompts))),
        meta=meta,
    )
    return collate(prompt_ids, target_ids, int(lm.tokenizer.pad_token_id), rows)


# ---------------------------------------------------------------------------------------------------------
# the teacher-forced forward


def _soft_to(sp: SoftPrompt | None, device: torch.device, dtype: torch.dtype) -> SoftPrompt | None:
    """A soft prompt on the model's device and dtype (``.to`` keeps gradients flowing to trainable tensors)."""
    if sp is None:
        return None
    mask = sp.mask.to(device)
    if sp.embeds is not None:
        return SoftPrompt(mask=mask, embeds=sp.embeds.to(device=device, dtype=dtype))
    kv = [(k.to(device=device, dtype=dtype), v.to(device=device, dtype=dtype)) for k, v in sp.kv]  # type: ignore[union-attr]
    return SoftPrompt(mask=mask, kv=kv)


def _check_controls(controls: Sequence[Control]) -> None:
    for c in controls:
        if c.num_candidates > 1 or c.uses_select:
            raise LMControlError(
                f"control '{c.name}' picks among sampled candidates; a target's log-probability is not "
                "defined under it (score without it)"
            )


def target_logits(
    lm: LanguageModel,
    batch: TargetBatch,
    soft_prompts: Sequence[SoftPrompt] = (),
    controls: Sequence[Control] = (),
) -> torch.Tensor:
    """Logits (N, V) in float32 at the positions that predict target tokens, row-major (row 0's n_0 tokens, then
    row 1's, ...), matching ``batch.targets[batch.target_mask]``.

    ``soft_prompts`` are laid out before the prompt (e.g. a prefix under training, differentiable); controls add
    their own soft prompts, hidden edits and logits processors. Runs with gradients if the caller has them on.
    """
    _check_controls(controls)
    device, dtype = lm.model.device, lm.model.dtype
    batch = batch.to(device)
    rows = batch.rows
    parts = list(soft_prompts) + [sp for c in controls if (sp := c.soft_prompt(rows)) is not None]
    embeds_prompt, kv_prompt = merge_soft_prompts(parts)
    embeds_prompt, kv_prompt = _soft_to(embeds_prompt, device, dtype), _soft_to(kv_prompt, device, dtype)
    m_e = embeds_prompt.length if embeds_prompt is not None else 0
    n_virtual = sum(p.length for p in parts)
    b, width = batch.input_ids.shape
    t_p, r = batch.prompt_len, width - batch.prompt_len
    longest = int(batch.attention_mask.sum(1).max()) + n_virtual
    if longest > lm.info.max_positions:
        raise LMControlError(
            f"prompt + target too long: {longest} positions (soft prompts included) exceed the model's "
            f"context of {lm.info.max_positions}"
        )
    if r == 0:
        return torch.zeros(0, lm.info.vocab_size, device=device)

    final_editors: list[Control] = []
    layer_editors: dict[int, list[Control]] = {}
    for c in controls:
        if c.uses_hidden:
            layer = parse_site(c.hidden_site or "final", lm)
            (final_editors if layer is None else layer_editors.setdefault(layer, [])).append(c)
    logit_procs = [c for c in controls if c.uses_logits]
    per_step = bool(final_editors or layer_editors or logit_procs)
    # column T_p - 1 + s predicts target slot s; hidden index = m_e + column
    cols = torch.arange(t_p - 1, t_p - 1 + r, device=device)  # (R,)
    finished = ~batch.target_mask  # (B, R): slot s of row i is past its target (a finished row in decoding)

    def ctx_at(s: int) -> StepContext:
        return StepContext(
            s, lm, rows, batch.input_ids[:, : t_p + s], batch.attention_mask[:, : t_p + s], finished[:, s].cpu()
        )

    state: dict[str, Any] = {"ctx": None}  # None = the teacher-forced pass; a context = inside a lookahead

    def layer_fn(editors: list[Control]) -> Callable[[torch.Tensor], torch.Tensor]:
        def fn(hidden: torch.Tensor) -> torch.Tensor:  # (B, m_e + T, d); (B*k, 1, d) in a lookahead
            if state["ctx"] is not None:  # a lookahead forward: the engine runs it without layer edits
                return hidden
            hidden = hidden.clone()
            for s in range(r):  # step s, in decoding order
                h = hidden[:, m_e + t_p - 1 + s, :]  # (B, d)
                ctx = ctx_at(s)
                for c in editors:
                    h = c.edit_hidden(h, ctx)
                hidden[:, m_e + t_p - 1 + s, :] = h
            return hidden

        return fn

    with contextlib.ExitStack() as stack:
        for layer, editors in layer_editors.items():
            stack.enter_context(hf.edit_layer_output(lm.model, layer, layer_fn(editors)))
        prefill = build_prefill(lm, batch.input_ids, batch.attention_mask, embeds_prompt, kv_prompt)
        hidden = forward_hidden(lm, prefill)  # (B, m_e + T_p + R, d) after the final norm
        if not per_step:
            sel = batch.target_mask  # (B, R)
            return lm_logits(lm, hidden[:, m_e + cols][sel]).float()  # (N, V): the head only where needed
        steps = []
        for s in range(r):
            ctx = ctx_at(s)
            h = hidden[:, m_e + t_p - 1 + s, :]  # (B, d)
            for c in final_editors:
                h = c.edit_hidden(h, ctx)
            logits = lm_logits(lm, h).float()  # (B, V)
            if logit_procs:
                ctx.lookahead = _lookahead(lm, prefill, m_e, t_p + s, state, ctx)
                for c in logit_procs:
                    logits = c.process_logits(logits, ctx)
                ctx.lookahead = None
            steps.append(logits)
    logits = torch.stack(steps, dim=1)  # (B, R, V)
    return logits[batch.target_mask]  # (N, V)


def _lookahead(lm: LanguageModel, prefill: Any, m_e: int, n_cols: int, state: dict[str, Any], ctx: StepContext):
    """``lookahead(candidate_ids (B, k)) -> (B, k, d)`` at a step where decoding holds ``n_cols`` token columns:
    the cache cut to what decoding would hold then (kv prefix + embeds + those columns), one forward of B*k."""
    m_kv = prefill.attention_mask.shape[1] - prefill.position_ids.shape[1]
    keep = m_kv + m_e + n_cols
    mask = prefill.attention_mask[:, :keep]  # (B, keep)
    last_pos = prefill.position_ids[:, m_e + n_cols - 1]  # (B,) position of the newest token

    def lookahead(candidate_ids: torch.Tensor) -> torch.Tensor:
        b, k = candidate_ids.shape
        cache = hf.make_cache(
            lm.model,
            [(key[:, :, :keep].repeat_interleave(k, 0), val[:, :, :keep].repeat_interleave(k, 0))
             for key, val in hf.cache_kv(prefill.cache)],
        )
        rep_mask = torch.cat([mask.repeat_interleave(k, 0), mask.new_ones(b * k, 1)], 1)  # (B*k, keep + 1)
        pos = (last_pos + 1).repeat_interleave(k, 0)[:, None]  # (B*k, 1)
        state["ctx"] = ctx
        try:
            out = hf.decoder(lm.model)(
                input_ids=candidate_ids.reshape(b * k, 1),
                attention_mask=rep_mask,
                position_ids=pos,
                cache=cache,
                use_cache=True,
            )
        finally:
            state["ctx"] = None
        return out.last_hidden_state[:, -1, :].reshape(b, k, -1)  # (B, k, d)

    return lookahead


def target_token_logprobs(
    lm: LanguageModel,
    batch: TargetBatch,
    soft_prompts: Sequence[SoftPrompt] = (),
    controls: Sequence[Control] = (),
) -> torch.Tensor:
    """(N,) log p(y_t | x, y_<t) of every target token, row-major (differentiable)."""
    logits = target_logits(lm, batch, soft_prompts, controls)  # (N, V)
    targets = batch.targets[batch.target_mask].to(logits.device)  # (N,)
    return logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)


def target_loss(
    lm: LanguageModel,
    batch: TargetBatch,
    soft_prompts: Sequence[SoftPrompt] = (),
    controls: Sequence[Control] = (),
) -> torch.Tensor:
    """Mean next-token cross-entropy over all target tokens of the batch (a scalar; gradients flow into the
    soft-prompt tensors): the loss of a target behind a soft prompt (prefix-tuning, Li & Liang 2021, eq. 2)."""
    logits = target_logits(lm, batch, soft_prompts, controls)  # (N, V)
    if logits.shape[0] == 0:
        raise LMControlError("the batch has no target tokens")
    return torch.nn.functional.cross_entropy(logits, batch.targets[batch.target_mask].to(logits.device))


# ---------------------------------------------------------------------------------------------------------
# the public entry


@torch.no_grad()
def score(
    lm: LanguageModel,
    prompts: Sequence[str],
    targets: Sequence[Target],
    controls: Sequence[Control] = (),
    *,
    chat: bool = True,
    system: str | None = None,
    batch_size: int = 16,
    row_meta: Sequence[dict[str, Any]] | None = None,
    append_eos: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ScoreOutput:
    """Per-token log-probs of each target given its prompt, teacher-forced under ``controls``.

    Args:
        lm: the model bundle (any device / dtype; log-probs are computed in float32).
        prompts: user prompts (non-empty), formatted as ``generate`` formats them.
        targets: per prompt, the reply as text (tokenised without special tokens) or as token ids (pass the
            ids ``generate`` returned for an exact round trip: decoded text may re-tokenise differently).
        controls: controls applied as in decoding (system and soft prompts, hidden edits, logits processors);
            best-of-N has no target log-probability and is refused.
        chat: wrap prompts in the chat template (a control with ``chat=False`` turns it off, as in decoding).
        system: system message, joined with the controls' system prompts.
        batch_size: rows per forward; a row's score does not depend on its neighbours.
        row_meta: per-prompt dicts handed to controls (e.g. ``{"prefix": "e2e"}``).
        append_eos: also score the end-of-sequence token after each target.
        progress: called with the number of rows after each batch.
    """
    if batch_size < 1:
        raise LMControlError(f"batch_size must be >= 1, got {batch_size}")
    prompts, targets, meta = check_inputs(prompts, targets, row_meta)  # the whole call fails before any work
    _check_controls(controls)
    for c in controls:
        c.setup(lm)
    token_logprobs: list[torch.Tensor] = []
    token_ids: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        end = min(start + batch_size, len(prompts))
        batch = encode(
            lm,
            prompts[start:end],
            targets[start:end],
            controls,
            chat=chat,
            system=system,
            append_eos=append_eos,
            row_meta=meta[start:end],
            prompt_index=range(start, end),
        )
        flat = target_token_logprobs(lm, batch, (), controls).float().cpu()  # (N,)
        counts = batch.num_tokens.tolist()
        token_logprobs += list(flat.split(counts))
        token_ids += [row[m].tolist() for row, m in zip(batch.targets, batch.target_mask, strict=True)]
        if progress is not None:
            progress(end - start)
    num = torch.tensor([len(t) for t in token_ids], dtype=torch.long)
    sums = torch.stack([t.sum() for t in token_logprobs]) if token_logprobs else torch.zeros(0)
    means = torch.where(num > 0, sums / num.clamp(min=1), torch.full_like(sums, float("nan")))
    return ScoreOutput(token_logprobs, token_ids, sums, means, num)
