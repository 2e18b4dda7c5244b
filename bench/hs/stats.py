"""Summary statistics of latency samples (pure; no I/O)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks.

    Raises ValueError on an empty sample or q outside [0, 100]."""
    if not samples:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise ValueError(f"percentile q must be within [0, 100], got {q}")
    xs = sorted(samples)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(xs[lo])
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50.0)


@dataclass(frozen=True)
class Summary:
    """Latency summary in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(seconds: Sequence[float]) -> Summary:
    """Summarise latencies given in seconds as milliseconds."""
    if not seconds:
        raise ValueError("summary of an empty sample")
    ms = [s * 1000.0 for s in seconds]
    return Summary(
        count=len(ms),
        mean_ms=sum(ms) / len(ms),
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        min_ms=min(ms),
        max_ms=max(ms),
    )


def rate(count: int, seconds: float) -> float:
    """Events per second; 0 when no time passed (nothing measurable)."""
    if seconds <= 0:
        return 0.0
    return count / seconds
