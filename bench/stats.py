"""Percentiles and the summary a load run reports."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    return {f"p{q}": round(percentile(seconds, q) * 1000, 2) for q in (50, 90, 99)} | {
        "max": round(max(seconds, default=math.nan) * 1000, 2)
    }
