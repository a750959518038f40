"""Timing: seconds per sample, tokens per second, and overhead against a baseline measured in the same run.

Wall-clock figures are only comparable inside one process on one machine under the same load, which is why
``lmcontrol bench`` interleaves methods batch by batch and reports each method's cost as a ratio to the
first (baseline) method rather than as absolute speed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def seconds_per_sample(seconds: Sequence[float]) -> float:
    """Mean wall time per generated sample (each row's share of its batched call)."""
    return sum(seconds) / len(seconds) if seconds else float("nan")


def tokens_per_second(tokens: Sequence[int], seconds: Sequence[float]) -> float:
    """Generated tokens over wall time, summed over rows."""
    total = sum(seconds)
    return sum(tokens) / total if total > 0 else float("nan")


def overhead(method_seconds: float, baseline_seconds: float) -> float:
    """How many times slower than the baseline (1.0 = same cost); NaN if either is unknown."""
    if not (math.isfinite(method_seconds) and math.isfinite(baseline_seconds)) or baseline_seconds <= 0:
        return float("nan")
    return method_seconds / baseline_seconds
