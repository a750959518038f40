"""Statistics every benchmark reports: the mean with its standard error, and paired comparisons to a baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_se(xs: Sequence[float | None]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n)) of the finite values; (NaN, NaN) for none,
    SE NaN for one (undefined)."""
    vals = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    if not vals:
        return float("nan"), float("nan")
    n, m = len(vals), sum(vals) / len(vals)
    if n == 1:
        return m, float("nan")
    return m, math.sqrt(sum((x - m) ** 2 for x in vals) / (n - 1) / n)
