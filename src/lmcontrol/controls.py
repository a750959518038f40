"""The control interface: what a method can hook into the generation loop.

A ``Control`` overrides any of these hook points (the defaults do nothing):

- ``system_prompt()`` — text for the system message (the prompting baseline);
- ``soft_prompt(rows)`` — vectors prepended as input embeddings and/or per-layer key/value prefixes, per row
  (prefix-tuning, prompt compression, DGLM's prompt generator); rows may carry different prefixes or none;
- ``edit_hidden(h, ctx)`` — edit the new token's hidden state (B, d) at ``hidden_site`` before the LM head
  (``"final"`` = after the final norm, or ``"layer:L"`` = the output of decoder layer L);
- ``process_logits(logits, ctx)`` — rewrite next-token logits (controlled decoding, FUDGE-style guidance);
- ``num_candidates`` + ``select(prompts, candidates)`` — sample N continuations per prompt and keep one;
- ``chat`` — ``False`` if the control was trained on raw text and needs the chat template off (an E2E prefix,
  DGLM's prompt generator); ``None`` = either.

Several controls compose in one call: system prompts are joined, soft prompts concatenated, hidden edits and
logit processors applied in list order, and the largest ``num_candidates`` is used with every selector voting
in turn (the last selector decides).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from lmcontrol import LMControlError

if TYPE_CHECKING:
    from lmcontrol.models import LanguageModel

KV = tuple[torch.Tensor, torch.Tensor]


@dataclasses.dataclass
class SoftPrompt:
    """Virtual tokens for a batch.

    Attributes:
        mask: (B, m) bool — which of the m virtual positions each row uses (False = this row has none there).
        embeds: (B, m, d) input embeddings prepended to the prompt, or None.
        kv: per layer, (key, value) each (B, n_kv_heads, m, head_dim), placed in the KV cache before the prompt,
            or None. A soft prompt has either ``embeds`` or ``kv``.
    """

    mask: torch.Tensor
    embeds: torch.Tensor | None = None
    kv: list[KV] | None = None

    def __post_init__(self) -> None:
        if (self.embeds is None) == (self.kv is None):
            raise ValueError("a SoftPrompt has exactly one of embeds or kv")

    @classmethod
    def from_kv(cls, kv: torch.Tensor | Sequence[KV], batch: int | None = None, mask: torch.Tensor | None = None):
        """A KV soft prompt from a stacked tensor or a per-layer list.

        ``kv`` is (L, 2, B, H_kv, m, hd), or (L, 2, H_kv, m, hd) shared by every row (then ``batch`` rows are
        expanded, no copy), or a per-layer list of (key, value) each (B, H_kv, m, hd). ``mask`` defaults to all
        m positions used by every row.
        """
        if isinstance(kv, torch.Tensor):
            if kv.dim() == 5:  # (L, 2, H_kv, m, hd) -> (L, 2, B, H_kv, m, hd)
                if batch is None:
                    raise ValueError("a shared (L, 2, H_kv, m, hd) prefix needs the batch size")
                kv = kv.unsqueeze(2).expand(-1, -1, batch, -1, -1, -1)
            layers = [(kv[i, 0], kv[i, 1]) for i in range(kv.shape[0])]
        else:
            layers = [(k, v) for k, v in kv]
        b, m = layers[0][0].shape[0], layers[0][0].shape[2]
        if mask is None:
            mask = torch.ones(b, m, dtype=torch.bool, device=layers[0][0].device)
        return cls(mask=mask, kv=layers)

    @property
    def length(self) -> int:
        """m, the number of virtual positions."""
        return int(self.mask.shape[1])

    def scatter(self, rows: Sequence[int], batch: int) -> SoftPrompt:
        """This prompt's B rows placed at ``rows`` of a ``batch``-row prompt; other rows get no virtual tokens."""
        if list(rows) == list(range(batch)):
            return self
        idx = torch.as_tensor(list(rows), device=self.mask.device)

        def place(t: torch.Tensor) -> torch.Tensor:
            out = t.new_zeros((batch, *t.shape[1:]))
            out[idx] = t
            return out

        if self.embeds is not None:
            return SoftPrompt(mask=place(self.mask), embeds=place(self.embeds))
        return SoftPrompt(mask=place(self.mask), kv=[(place(k), place(v)) for k, v in self.kv or []])

    def select(self, rows: Sequence[int]) -> SoftPrompt:
        """The prompt of the given rows only."""
        idx = torch.as_tensor(list(rows), device=self.mask.device, dtype=torch.long)
        if self.embeds is not None:
            return SoftPrompt(mask=self.mask[idx], embeds=self.embeds[idx])
        return SoftPrompt(mask=self.mask[idx], kv=[(k[idx], v[idx]) for k, v in self.kv or []])


@dataclasses.dataclass
class Rows:
    """What controls know about the batch before decoding starts (one entry per row)."""

    prompts: list[str]  # the user prompts (repeated when best-of-N expands rows)
    texts: list[str]  # the exact text the model sees (after chat template / system prompt)
    prompt_index: list[int]  # which input prompt each row belongs to
    meta: list[dict[str, Any]]  # per-row fields from the caller, e.g. {"prefix": "e2e"}

    def __len__(self) -> int:
        return len(self.prompts)


@dataclasses.dataclass
class StepContext:
    """The state of one decoding step for the rows a hook is applied to (``edit_hidden``, ``process_logits``).

    The engine calls a control once per step on the rows that carry it, so every tensor here has one entry per
    such row (B = ``len(rows)``), and all those rows are at the same ``step``.
    """

    step: int  # 0 = the step that produces the first new token
    lm: LanguageModel
    rows: Rows
    finished: torch.Tensor  # (B,) bool
    token_lists: list[list[int]]  # per row: prompt ids + the tokens generated so far
    pad_id: int = 0
    lookahead: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        """(B, T) prompt + generated ids, left padded (the last ``step`` columns are the generated tokens)."""
        width = max(len(t) for t in self.token_lists)
        ids = torch.full((len(self.token_lists), width), self.pad_id, dtype=torch.long)
        for i, t in enumerate(self.token_lists):
            ids[i, width - len(t) :] = torch.tensor(t, dtype=torch.long)
        return ids

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, T) 1 over ``input_ids``' real tokens, 0 over the left padding."""
        width = max(len(t) for t in self.token_lists)
        return torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in self.token_lists], dtype=torch.long)

    def lookahead_hidden(self, candidate_ids: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states (B, k, d) each candidate next token (B, k) would produce, without
        changing the real cache (one extra batched forward of B*k tokens)."""
        if self.lookahead is None:
            raise RuntimeError("lookahead is only available inside process_logits")
        return self.lookahead(candidate_ids)


class Control:
    """Base class: override the hooks you need. See the module docstring for the hook points."""

    name: str = "control"
    hidden_site: str | None = None
    num_candidates: int = 1
    candidate_temperature: float = 0.7  # used for best-of-N when the call itself is greedy
    chat: bool | None = None  # False = this control needs raw prompts (chat template off); None = either

    def setup(self, lm: LanguageModel) -> None:
        """Called once per generate call, before anything else (check compatibility, move tensors)."""

    def system_prompt(self) -> str | None:
        return None

    def soft_prompt(self, rows: Rows) -> SoftPrompt | None:
        return None

    def edit_hidden(self, h: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return h

    def process_logits(self, logits: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return logits

    def select(self, prompts: list[str], candidates: list[list[str]]) -> list[int]:
        """For each prompt, the index of the candidate to keep."""
        return [0] * len(prompts)

    @property
    def uses_soft_prompt(self) -> bool:
        return type(self).soft_prompt is not Control.soft_prompt

    @property
    def uses_hidden(self) -> bool:
        return type(self).edit_hidden is not Control.edit_hidden

    @property
    def uses_logits(self) -> bool:
        return type(self).process_logits is not Control.process_logits

    @property
    def uses_select(self) -> bool:
        return type(self).select is not Control.select


def merge_soft_prompts(parts: Sequence[SoftPrompt]) -> tuple[SoftPrompt | None, SoftPrompt | None]:
    """Concatenate several controls' soft prompts into one embeds part and one kv part (either may be None)."""
    embeds = [p for p in parts if p.embeds is not None]
    kvs = [p for p in parts if p.kv is not None]
    emb = None
    if embeds:
        emb = SoftPrompt(
            mask=torch.cat([p.mask for p in embeds], dim=1),
            embeds=torch.cat([p.embeds for p in embeds], dim=1),  # type: ignore[misc]
        )
    kv = None
    if kvs:
        n_layers = len(kvs[0].kv)  # type: ignore[arg-type]
        kv = SoftPrompt(
            mask=torch.cat([p.mask for p in kvs], dim=1),
            kv=[
                (
                    torch.cat([p.kv[i][0] for p in kvs], dim=2),  # type: ignore[index]
                    torch.cat([p.kv[i][1] for p in kvs], dim=2),  # type: ignore[index]
                )
                for i in range(n_layers)
            ],
        )
    return emb, kv


# --------------------------------------------------------------------------------------------------------
# `--control` specs: "kind:positional,key=value,key=value" (keys may repeat, e.g. guide=a,guide=b)


@dataclasses.dataclass(frozen=True)
class ControlSpec:
    kind: str
    args: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    text: str = ""

    def values(self, key: str) -> list[str]:
        return [v for k, v in self.options if k == key]

    def str(self, key: str, default: str | None = None) -> str | None:
        vals = self.values(key)
        return vals[-1] if vals else default

    def float(
        self, key: str, default: float, *, positive: bool = False, min_value: float | None = None
    ) -> float:
        raw = self.str(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise LMControlError(f"--control {self.text}: {key}={raw!r} is not a number") from None
        if not math.isfinite(value):
            raise LMControlError(f"--control {self.text}: {key} must be finite, got {raw}")
        if positive and value <= 0:
            raise LMControlError(f"--control {self.text}: {key} must be > 0, got {raw}")
        if min_value is not None and value < min_value:
            raise LMControlError(f"--control {self.text}: {key} must be >= {min_value}, got {raw}")
        return value

    def int(self, key: str, default: int, *, min_value: int | None = None) -> int:
        raw = self.str(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise LMControlError(f"--control {self.text}: {key}={raw!r} is not an integer") from None
        if min_value is not None and value < min_value:
            raise LMControlError(f"--control {self.text}: {key} must be >= {min_value}, got {raw}")
        return value

    def check_keys(self, allowed: Sequence[str]) -> None:
        unknown = sorted({k for k, _ in self.options} - set(allowed))
        if unknown:
            raise LMControlError(
                f"--control {self.text}: unknown option(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})"
            )


def parse_control_spec(text: str) -> ControlSpec:
    """Parse ``kind[:item,item,...]`` where an item is ``key=value`` or a positional value."""
    text = text.strip()
    if not text:
        raise LMControlError("empty --control spec")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise LMControlError(f"--control {text[:60]!r}: control characters (newlines, tabs, ...) are not allowed")
    kind, _, rest = text.partition(":")
    args: list[str] = []
    options: list[tuple[str, str]] = []
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if eq:
            options.append((key.strip(), value.strip()))
        else:
            args.append(item)
    return ControlSpec(kind=kind.strip(), args=tuple(args), options=tuple(options), text=text)


def build_control(spec: str | ControlSpec, lm: LanguageModel) -> Control:
    """Build a registered control from its spec (see ``lmcontrol.registry``)."""
    from lmcontrol.registry import control_entry

    parsed = parse_control_spec(spec) if isinstance(spec, str) else spec
    return control_entry(parsed.kind).factory(parsed, lm)
