"""Coherence: cosine similarity between the prompt's and the continuation's sentence embeddings.

Su et al. (2022, SimCTG) and RE-Control (Kong et al. 2024) score coherence as
``cos(e(prompt), e(continuation))`` with the SimCSE encoder ``princeton-nlp/sup-simcse-bert-base-uncased``;
we default to the packaged all-MiniLM-L6-v2 (any sentence-transformers id or path works), so absolute values
are not comparable with the papers' — compare methods within one run.
"""

from __future__ import annotations

from collections.abc import Sequence

from lmcontrol.eval.embeddings import embed


def coherence(
    prompts: Sequence[str], continuations: Sequence[str], encoder: str | None = None
) -> list[float]:
    """Per row, cos(e(prompt), e(continuation)) in [-1, 1]."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    if not prompts:
        return []
    e_p, e_c = embed(prompts, encoder), embed(continuations, encoder)  # (N, d) each, unit norm
    return (e_p * e_c).sum(axis=1).astype(float).tolist()
