"""Token choice with per-row settings: greedy, or temperature / top-k / top-p sampling from each row's own
seeded generator (so a row's sample never depends on which strangers share its batch)."""

from __future__ import annotations

import numpy as np
import torch


def row_generator(seed: int | None, key: int, device: torch.device) -> torch.Generator | None:
    """A generator seeded from (seed, key), e.g. key = the candidate index of a best-of-N row."""
    if seed is None:
        return None
    state = int(np.random.SeedSequence([seed, key]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(state)


def repeat_seed(seed: int | None, repeat: int) -> int | None:
    """The seed of the ``repeat``-th copy (0-based) of one prompt in one batch call: the seed itself for the first
    copy, one derived from (seed, repeat) for the others — repeated prompts get distinct samples, and a prompt's
    first sample still never depends on its batch mates."""
    if seed is None or repeat == 0:
        return seed
    return int(np.random.SeedSequence([seed, 0x5EED, repeat]).generate_state(1, dtype=np.uint64)[0] >> 1)


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """One row's logits (V,) after temperature, top-k and top-p (nucleus) filtering."""
    logits = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (always keep the best one)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        logits = logits.masked_fill(torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted), float("-inf"))
    return logits


def choose_tokens(
    logits: torch.Tensor,
    temperature: list[float],
    top_k: list[int],
    top_p: list[float],
    generators: list[torch.Generator | None],
) -> torch.Tensor:
    """Next token per row, (B, V) -> (B,): argmax where temperature is 0, else a sample from the row's generator."""
    tokens = logits.argmax(dim=-1)
    for i, t in enumerate(temperature):
        if t > 0:
            probs = filter_logits(logits[i], t, top_k[i], top_p[i]).softmax(-1)
            tokens[i] = torch.multinomial(probs, 1, generator=generators[i])[0]
    return tokens
