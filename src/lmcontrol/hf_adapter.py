"""Every contact with transformers internals lives here: decoder/head access, KV-cache objects, layer hooks.

transformers changes its cache classes and layer return types between releases; keeping all of that in one
small module means a version bump touches one file. Nothing else in lmcontrol reaches into ``model.model`` or
cache internals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

KV = tuple[torch.Tensor, torch.Tensor]  # (B, n_kv_heads, T, head_dim) each


def decoder(model: nn.Module) -> nn.Module:
    """The transformer stack without the LM head; its last hidden state is after the final norm."""
    return model.get_decoder()


def lm_head(model: nn.Module) -> nn.Module:
    return model.get_output_embeddings()


def input_embeddings(model: nn.Module) -> nn.Module:
    return model.get_input_embeddings()


def decoder_layers(model: nn.Module) -> Sequence[nn.Module]:
    dec = decoder(model)
    layers = getattr(dec, "layers", None) or getattr(dec, "h", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")
    return layers


def make_cache(model: nn.Module, prefix_kv: Sequence[KV] | None = None) -> Any:
    """A fresh dynamic KV cache, optionally pre-filled with per-layer key/value prefixes."""
    from transformers import DynamicCache

    if prefix_kv is None:
        return DynamicCache(config=model.config)
    return DynamicCache(ddp_cache_data=[(k, v) for k, v in prefix_kv], config=model.config)


def cache_kv(cache: Any) -> list[KV]:
    """The per-layer (key, value) tensors of a dynamic cache."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def repeat_cache(model: nn.Module, cache: Any, k: int) -> Any:
    """A new cache with every row repeated ``k`` times (row-major: row0 x k, row1 x k, ...); the input is untouched."""
    return make_cache(
        model, [(key.repeat_interleave(k, 0), val.repeat_interleave(k, 0)) for key, val in cache_kv(cache)]
    )


def select_cache_rows(model: nn.Module, cache: Any, rows: torch.Tensor) -> Any:
    return make_cache(model, [(key[rows], val[rows]) for key, val in cache_kv(cache)])


@contextlib.contextmanager
def edit_layer_output(
    model: nn.Module, layer: int, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Apply ``fn`` to the residual-stream output of decoder layer ``layer`` (B, T, d) for the duration.

    The hook is removed on exit, so the caller's model is unchanged afterwards.
    """

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
