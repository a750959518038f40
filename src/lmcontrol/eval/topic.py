"""Topic of continuations: the AG News probe (World, Sports, Business, Sci/Tech).

Logistic regression on all-MiniLM-L6-v2 embeddings trained on the shared AG News train rows (Zhang et al.
2015); accuracy on the AG News test set is on the artifact's card (``artifacts/probe-agnews``). Topic-control
methods (DGLM, prefixes) score a continuation by the probability of the target topic, or by whether the
probe's top label is the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def topic_probabilities(texts: Sequence[str], probe: str = "ag_news") -> tuple[list[str], np.ndarray]:
    """The probe's label names and the class probabilities (N, C) per text."""
    from lmcontrol.eval.probes import load_probe

    p = load_probe(probe)
    probs = p.predict_proba(list(texts)) if texts else np.zeros((0, len(p.config.labels)), dtype=np.float32)
    return list(p.config.labels), probs


def topic_accuracy(texts: Sequence[str], targets: Sequence[str], probe: str = "ag_news") -> float:
    """Share of texts whose most likely topic is their target (a label name or raw value)."""
    from lmcontrol.eval.probes import load_probe

    if len(texts) != len(targets):
        raise ValueError(f"{len(texts)} texts but {len(targets)} targets")
    if not texts:
        return float("nan")
    p = load_probe(probe)
    wanted = np.array([p.label_index(str(t)) for t in targets])
    return float((p.predict_proba(list(texts)).argmax(-1) == wanted).mean())
