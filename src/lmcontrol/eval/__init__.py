"""Evaluation: metrics over (prompt, continuation) rows, judges, probes and reward models.

Names are imported lazily (``from lmcontrol.eval import distinct_n`` loads only ``text_metrics``), so
importing the package never pulls in torch. ``docs/evaluation.md`` defines every metric and cites its source.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # text_metrics (pure Python)
    "words": "text_metrics",
    "distinct_n": "text_metrics",
    "rep_n": "text_metrics",
    "diversity": "text_metrics",
    "repetition_rate": "text_metrics",
    "corpus_bleu": "text_metrics",
    "rouge_l": "text_metrics",
    # judges and scorers
    "perplexities": "fluency",
    "FluencyConfig": "fluency",
    "coherence": "coherence",
    "embed": "embeddings",
    "mauve_score": "mauve_metric",
    "MauveConfig": "mauve_metric",
    "vader_compound": "sentiment",
    "positive_probability": "sentiment",
    "topic_probabilities": "topic",
    "topic_accuracy": "topic",
    "get_toxicity_scorer": "toxicity",
    # probes and rewards
    "LinearProbe": "probes",
    "load_probe": "probes",
    "RewardFn": "reward",
    "load_reward": "reward",
    "BTRewardModel": "reward",
    # the metric registry
    "evaluate": "suite",
    "register_metric": "suite",
    "parse_metrics": "suite",
    "EvalContext": "suite",
    "METRICS": "suite",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lmcontrol.eval.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lmcontrol.eval' has no attribute {name!r}")
