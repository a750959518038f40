"""Model runners: one forward of a batch of rows against the engine's ``SlotCache``.

``runner.forward(x, positions, cache, rows, col, edit)`` runs the decoder on input embeddings ``x`` (A, T, d) of
the rows in slots ``rows``, writes their keys/values at columns ``col .. col+T-1`` (the caller has already marked
those columns valid), and returns the final-norm hidden states (A, T, d). ``edit(layer, hidden)`` is called on
the residual stream after each layer listed in ``edit.layers`` (hidden-state controls at ``layer:L``).

- ``LlamaRunner``: Llama-family decoders (SmolLM2, Llama, Qwen2, Mistral without sliding window) written against
  the static cache: no per-step cache objects, no per-step mask builder, keys/values written in place. It calls
  transformers' own submodules and its SDPA attention function, so greedy output equals ``model.generate``.
- ``HFRunner``: any other causal LM, through its own forward and a ``DynamicCache`` view of the slots.

Like ``lmcontrol.hf_adapter``, this is one of the two places that knows transformers' internals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from lmcontrol import hf_adapter as hf
from lmcontrol.engine.cache import SlotCache


class LayerEdit(Protocol):
    layers: frozenset[int]

    def __call__(self, layer: int, hidden: torch.Tensor) -> torch.Tensor: ...


def attention_mask(cache: SlotCache, rows: slice, col: int | torch.Tensor, width: int) -> torch.Tensor | None:
    """Boolean mask (A, 1, T, used) for T new tokens (the caller has marked their columns valid).

    Decode (``col`` a tensor of per-row columns, T = 1): the rows' valid columns. Prefill (``col`` an int, all rows
    write columns col..col+T-1): valid cached columns plus causal attention among the new ones; a query always sees
    itself, so masked pad queries stay finite. None when nothing is masked (transformers' unmasked fast path).
    """
    if isinstance(col, torch.Tensor):
        used = int(col.max()) + 1
        valid = cache.valid[rows, :used]  # (A, used)
        return None if bool(valid.all()) else valid[:, None, None, :]
    used = col + width
    valid = cache.valid[rows, :used]  # (A, used)
    if col == 0 and bool(valid.all()):
        return None
    q = torch.arange(width, device=valid.device)[:, None] + col  # (T, 1) column of each query
    k = torch.arange(used, device=valid.device)[None, :]  # (1, used)
    mask = valid[:, None, :] & (k <= q)[None]  # (A, T, used)
    mask |= (k == q)[None]
    return mask[:, None]  # (A, 1, T, used)


class LlamaRunner:
    """Decoder forward for Llama-style layers (pre-norm attention with RoPE + gated MLP) over the slot cache."""

    model_types = ("llama", "qwen2", "mistral", "qwen3", "olmo2")

    def __init__(self, model: nn.Module) -> None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        self.decoder = hf.decoder(model)
        self.layers = list(hf.decoder_layers(model))
        self.embed = hf.input_embeddings(model)
        self.attention = sdpa_attention_forward
        self.apply_rope = _rope_fn(model)

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        cfg = model.config
        if getattr(cfg, "model_type", None) not in cls.model_types or getattr(cfg, "sliding_window", None):
            return False
        layer = hf.decoder_layers(model)[0]
        attn = getattr(layer, "self_attn", None)
        return all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "scaling")) and not hasattr(
            attn, "q_norm"
        )

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cache: SlotCache,
        rows: slice,
        col: int | torch.Tensor,
        edit: LayerEdit | None = None,
    ) -> torch.Tensor:
        batch, width, _ = x.shape
        per_row = isinstance(col, torch.Tensor)  # decode: each row writes its own column
        used = int(col.max()) + 1 if per_row else col + width
        arange = torch.arange(batch, device=x.device)
        mask = attention_mask(cache, rows, col, width)
        cos, sin = self.decoder.rotary_emb(x, position_ids=positions)
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            shape = (batch, width, -1, attn.head_dim)
            q = attn.q_proj(h).view(shape).transpose(1, 2)  # (A, nh, T, hd)
            k = attn.k_proj(h).view(shape).transpose(1, 2)  # (A, nkv, T, hd)
            v = attn.v_proj(h).view(shape).transpose(1, 2)
            q, k = self.apply_rope(q, k, cos, sin)
            keys, values = cache.keys[i, rows], cache.values[i, rows]  # (A, nkv, T_cap, hd) views
            if per_row:
                keys[arange, :, col] = k[:, :, 0]  # (A, nkv, hd) into each row's column
                values[arange, :, col] = v[:, :, 0]
            else:
                keys[:, :, col:used] = k
                values[:, :, col:used] = v
            out, _ = self.attention(attn, q, keys[:, :, :used], values[:, :, :used], mask, scaling=attn.scaling)
            x = x + attn.o_proj(out.reshape(batch, width, -1))  # out: (A, T, nh, hd)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
            if edit is not None and i in edit.layers:
                x = edit(i, x)
        return self.decoder.norm(x)


class HFRunner:
    """Any causal LM: its own forward over a ``DynamicCache`` holding the slots' past columns."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.decoder = hf.decoder(model)
        self.embed = hf.input_embeddings(model)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cache: SlotCache,
        rows: slice,
        col: int | torch.Tensor,
        edit: LayerEdit | None = None,
    ) -> torch.Tensor:
        width = x.shape[1]
        per_row = isinstance(col, torch.Tensor)  # decode: transformers appends at one column P for all rows
        start = int(col.max()) if per_row else col
        past = [(cache.keys[i, rows, :, :start], cache.values[i, rows, :, :start]) for i in range(cache.num_layers)]
        dyn = hf.make_cache(self.model, past if start > 0 else None)
        mask = cache.valid[rows, : start + width].clone()
        if per_row:  # the new token sits at column P for transformers, at its own column in the slots
            mask[torch.arange(x.shape[0], device=x.device), col] = False
            mask[:, start] = True
        with contextlib.ExitStack() as stack:
            for layer in sorted(edit.layers) if edit is not None else ():
                stack.enter_context(hf.edit_layer_output(self.model, layer, _bind(edit, layer)))
            out = self.decoder(
                inputs_embeds=x, attention_mask=mask.long(), position_ids=positions, cache=dyn, use_cache=True
            )
        arange = torch.arange(x.shape[0], device=x.device)
        for i, (k, v) in enumerate(hf.cache_kv(dyn)):
            if per_row:
                cache.keys[i, rows][arange, :, col] = k[:, :, start]
                cache.values[i, rows][arange, :, col] = v[:, :, start]
            else:
                cache.keys[i, rows, :, start : start + width] = k[:, :, start : start + width]
                cache.values[i, rows, :, start : start + width] = v[:, :, start : start + width]
        return out.last_hidden_state


def lookahead_hidden(
    model: nn.Module,
    cache: SlotCache,
    row_index: torch.Tensor,
    positions: torch.Tensor,
    used: int,
    candidate_ids: torch.Tensor,
) -> torch.Tensor:
    """Final-norm hidden states (A, k, d) each candidate next token (A, k) would produce after the rows'
    cached columns ``:used``, without touching the cache (one batched forward of A*k tokens)."""
    batch, k = candidate_ids.shape
    past = [
        (
            cache.keys[i, row_index, :, :used].repeat_interleave(k, 0),
            cache.values[i, row_index, :, :used].repeat_interleave(k, 0),
        )
        for i in range(cache.num_layers)
    ]
    mask = cache.valid[row_index, :used].repeat_interleave(k, 0)  # (A*k, used)
    mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1).long()
    out = hf.decoder(model)(
        input_ids=candidate_ids.reshape(batch * k, 1),
        attention_mask=mask,
        position_ids=positions.repeat_interleave(k, 0)[:, None],
        cache=hf.make_cache(model, past),
        use_cache=True,
    )
    return out.last_hidden_state[:, -1, :].reshape(batch, k, -1)  # (A, k, d)


def make_runner(model: nn.Module) -> LlamaRunner | HFRunner:
    """The fast runner when the architecture is Llama-style, else the generic one."""
    return LlamaRunner(model) if LlamaRunner.supports(model) else HFRunner(model)


def _bind(edit: LayerEdit, layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda hidden: edit(layer, hidden)


def _rope_fn(model: nn.Module) -> Callable[..., Any]:
    import importlib

    module = importlib.import_module(type(hf.decoder_layers(model)[0]).__module__)
    return module.apply_rotary_pos_emb
