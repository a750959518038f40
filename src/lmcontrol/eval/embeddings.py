"""Sentence embeddings shared by coherence, MAUVE, probes and the reward model (one place, one convention).

Embeddings are unit-norm (all-MiniLM-L6-v2's own pipeline ends in a Normalize layer; we normalise anyway so
any encoder gives cosine-ready vectors). Long jobs (probe / reward training) can show a rich progress bar.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def embed(
    texts: Sequence[str], encoder: str | None = None, batch_size: int = 64, progress: str | None = None
) -> np.ndarray:
    """Unit-norm sentence embeddings (N, d), float32. ``progress``: a label to show a progress bar."""
    from lmcontrol.models import load_encoder

    model = load_encoder(encoder)
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = int(get_dim() or 0)
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)

    def run(chunk: Sequence[str]) -> np.ndarray:
        return model.encode(
            list(chunk),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    if progress is None:
        return np.asarray(run(texts), dtype=np.float32)
    from rich.progress import track

    step = 16 * batch_size
    chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
    parts = [run(c) for c in track(chunks, description=f"{progress} ({len(texts)} texts)", transient=True)]
    return np.concatenate(parts).astype(np.float32)
