"""``POST /v1/score``: the playground's scores, from lmcontrol's evaluation metrics (same models as the benches).

- ``toxicity``: P(toxic) from the Jigsaw BiLSTM (``lmcontrol.eval.toxicity``), lower is better;
- ``sentiment``: P(positive) from the SST-2 probe on MiniLM embeddings (``lmcontrol.eval.sentiment``);
- ``reward``: the Bradley-Terry HH reward of (prompt, response) (``lmcontrol.eval.reward``, name ``hh``).

Each scorer loads its model on first use and is then cached per process; calls are serialised by a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from lmcontrol import LMControlError

Scorer = Callable[[str, list[str]], list[float]]


def _toxicity(prompt: str, texts: list[str]) -> list[float]:
    from lmcontrol.eval.toxicity import get_toxicity_scorer

    return get_toxicity_scorer().score(texts)


def _sentiment(prompt: str, texts: list[str]) -> list[float]:
    from lmcontrol.eval.sentiment import positive_probability

    return positive_probability(texts)


def _reward(prompt: str, texts: list[str]) -> list[float]:
    from lmcontrol.eval.reward import load_reward

    return load_reward("hh")([prompt] * len(texts), texts)


SCORERS: dict[str, Scorer] = {"toxicity": _toxicity, "sentiment": _sentiment, "reward": _reward}
_lock = threading.Lock()


def check_metrics(names: Sequence[str] | None, offered: Sequence[str]) -> list[str]:
    """The metrics to compute (default: every offered one); unknown names raise listing the offered ones."""
    wanted = list(offered) if names is None else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in offered or n not in SCORERS]
    if unknown or not wanted:
        raise LMControlError(f"unknown score metric '{(unknown or [''])[0]}' (offered: {', '.join(offered)})")
    return wanted


def score(prompt: str, texts: list[str], metrics: Sequence[str]) -> list[dict[str, float]]:
    """``[{metric: value}]`` per text (blocking: the app runs it in a worker thread)."""
    columns = {}
    with _lock:
        for name in metrics:
            columns[name] = SCORERS[name](prompt, list(texts))
    return [{name: float(columns[name][i]) for name in metrics} for i in range(len(texts))]
