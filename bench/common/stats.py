"""Latency statistics: percentiles by the nearest-rank method, in milliseconds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (nan when there are none)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Latency:
    """Percentiles of one set of latencies, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of_seconds(cls, values: Sequence[float]) -> Latency:
        """Summarise latencies given in seconds."""
        ordered = sorted(v * 1000.0 for v in values)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            count=len(ordered),
            p50_ms=round(percentile(ordered, 0.50), 2),
            p95_ms=round(percentile(ordered, 0.95), 2),
            p99_ms=round(percentile(ordered, 0.99), 2),
            max_ms=round(ordered[-1], 2),
            mean_ms=round(sum(ordered) / len(ordered), 2),
        )

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-friendly: nan becomes None."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}
