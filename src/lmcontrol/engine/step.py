"""One forward of a batch whose rows carry different controls, up to the next token of every row.

``next_tokens`` is the whole per-step recipe (nanoGPT's ``generate`` body, made per-row):

1. run the decoder on the rows' new inputs; hidden-state controls at ``layer:L`` edit the residual stream of the
   rows that carry them (each control once, on its rows: cost grows with distinct controls, not rows);
2. hidden-state controls at ``final`` edit the last position's state of their rows;
3. the LM head gives logits; logits controls rewrite the logits of their rows (with a batched look-ahead);
4. each row picks its token with its own sampling settings and generator.

Rows are grouped by (control, step): a group's hook sees only its rows, as if they were a batch of their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from lmcontrol import hf_adapter as hf
from lmcontrol.controls import Control, StepContext
from lmcontrol.engine.sampling import choose_tokens
from lmcontrol.engine.state import rows_view

if TYPE_CHECKING:
    from lmcontrol.engine.state import Row


@dataclasses.dataclass
class Group:
    """The rows (indices into the forward's batch) that carry one control at one step."""

    control: Control
    rows: list[int]
    layer: int | None = None  # hidden-edit site: None = final norm, else the layer index

    def context(self, batch: Sequence[Row], lm, lookahead: Callable | None = None) -> StepContext:
        seqs = [batch[i] for i in self.rows]
        return StepContext(
            step=len(seqs[0].generated),
            lm=lm,
            rows=rows_view(seqs),
            finished=torch.zeros(len(seqs), dtype=torch.bool),
            token_lists=[s.state.prompt_ids + s.generated for s in seqs],
            pad_id=seqs[0].state.pad_id,
            lookahead=lookahead,
        )


def control_groups(batch: Sequence[Row], want: Callable[[Control], bool]) -> list[Group]:
    """Groups of rows by (control instance, step), in the order the controls first appear."""
    groups: dict[tuple[int, int], Group] = {}
    for i, seq in enumerate(batch):
        for c in seq.state.controls:
            if want(c):
                key = (id(c), len(seq.generated))
                if key not in groups:
                    groups[key] = Group(c, [], seq.state.hidden_sites.get(id(c)))
                groups[key].rows.append(i)
    return list(groups.values())


class LayerEdits:
    """The hidden-state edits at ``layer:L`` sites for one forward, as the runner's ``edit(layer, hidden)``."""

    def __init__(self, groups: list[Group], batch: Sequence[Row], lm) -> None:
        self.by_layer: dict[int, list[Group]] = {}
        for g in groups:
            self.by_layer.setdefault(g.layer, []).append(g)  # type: ignore[arg-type]
        self.layers = frozenset(self.by_layer)
        self.contexts = {id(g): g.context(batch, lm) for g in groups}

    def __call__(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:  # (A, T, d): edit the last position
        hidden = hidden.clone()
        for g in self.by_layer[layer]:
            idx = torch.tensor(g.rows, device=hidden.device)
            hidden[idx, -1, :] = g.control.edit_hidden(hidden[idx, -1, :], self.contexts[id(g)])
        return hidden


def next_tokens(
    lm,
    runner,
    x: torch.Tensor,
    positions: torch.Tensor,
    batch: Sequence[Row],
    forward: Callable,
    lookahead: Callable[[list[int], torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The next token of every row in ``batch`` (B,), given its new input embeddings ``x`` (B, T, d)."""
    hidden_groups = control_groups(batch, lambda c: c.uses_hidden)
    layer_groups = [g for g in hidden_groups if g.layer is not None]
    edits = LayerEdits(layer_groups, batch, lm) if layer_groups else None
    h = forward(x, positions, edits)[:, -1, :]  # (B, d) the new token's state after the final norm
    for g in hidden_groups:
        if g.layer is None:
            idx = torch.tensor(g.rows, device=h.device)
            h[idx] = g.control.edit_hidden(h[idx], g.context(batch, lm)).to(h.dtype)
    logits = hf.lm_head(lm.model)(h).float()  # (B, V)
    for g in control_groups(batch, lambda c: c.uses_logits):
        idx = torch.tensor(g.rows, device=logits.device)
        ctx = g.context(batch, lm, lookahead=lambda cand, rows=g.rows: lookahead(rows, cand))
        logits[idx] = g.control.process_logits(logits[idx], ctx)
    return choose_tokens(
        logits,
        [s.temperature for s in batch],
        [s.state.params.top_k for s in batch],
        [s.state.params.top_p for s in batch],
        [s.generator for s in batch],
    )
