"""Sentiment of continuations: VADER and the SST-2 logistic-regression probe.

- **VADER** (Hutto & Gilbert 2014): rule-based; the ``compound`` score in [-1, 1] (> 0.05 is positive by the
  authors' convention). No model weights, so it is a useful second opinion on short, informal text.
- **SST-2 probe**: P(positive) from ``artifacts/probe-sst2`` — logistic regression on all-MiniLM-L6-v2
  embeddings trained on SST-2 (Socher et al. 2013); see ``lmcontrol.eval.probes`` and its card for accuracy.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any


@functools.lru_cache(maxsize=1)
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_compound(texts: Sequence[str]) -> list[float]:
    """VADER compound score per text, in [-1, 1]."""
    analyzer = _vader()
    return [float(analyzer.polarity_scores(t)["compound"]) for t in texts]


def positive_probability(texts: Sequence[str], probe: str = "sst2") -> list[float]:
    """P(positive) per text from a sentiment probe (default the shipped SST-2 probe)."""
    from lmcontrol.eval.probes import load_probe

    p = load_probe(probe)
    if not texts:
        return []
    return p.predict_proba(list(texts))[:, p.label_index("positive")].astype(float).tolist()
