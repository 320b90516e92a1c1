"""Latency statistics over per-invoke samples.

Percentiles use linear interpolation between closest ranks (numpy's default,
``method="linear"``), written out here so the definition is explicit and the
same on every board whatever numpy it has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

PERCENTILES = (50, 90, 99)


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples``, linearly interpolated between closest ranks."""
    if not samples:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100; received {q}")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    frac = pos - lo
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * frac)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timed invokes, in milliseconds."""

    count: int
    min: float
    mean: float
    std: float  # population standard deviation, as benchmark_model prints
    p50: float
    p90: float
    p99: float
    max: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(samples_ms: Sequence[float]) -> LatencyStats:
    """Min/mean/std/p50/p90/p99/max of ``samples_ms`` (at least one sample)."""
    if not samples_ms:
        raise ValueError("no timed runs to summarize")
    n = len(samples_ms)
    mean = math.fsum(samples_ms) / n
    var = math.fsum((x - mean) ** 2 for x in samples_ms) / n
    return LatencyStats(
        count=n,
        min=float(min(samples_ms)),
        mean=mean,
        std=math.sqrt(var),
        p50=percentile(samples_ms, 50),
        p90=percentile(samples_ms, 90),
        p99=percentile(samples_ms, 99),
        max=float(max(samples_ms)),
    )
