"""Percentiles and summaries on known arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.bench.stats import percentile, summarize


@pytest.mark.parametrize(
    "samples,q,expected",
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 90, 3.7),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([5.0], 99, 5.0),
        ([10.0, 0.0, 30.0, 20.0, 40.0], 50, 20.0),  # unsorted input
        (list(range(1, 101)), 99, 99.01),
    ],
)
def test_percentile_known_values(samples: list[float], q: float, expected: float) -> None:
    assert percentile(samples, q) == pytest.approx(expected, abs=1e-12)


def test_percentile_matches_numpy_linear() -> None:
    rng = np.random.default_rng(7)
    for n in (2, 3, 17, 1000):
        x = rng.lognormal(size=n)
        for q in (1, 50, 90, 99, 99.9):
            assert percentile(list(x), q) == pytest.approx(
                float(np.percentile(x, q, method="linear")), rel=1e-12
            )


def test_summary_of_known_array() -> None:
    s = summarize([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert (s.count, s.min, s.max, s.mean, s.std) == (8, 2.0, 9.0, 5.0, 2.0)  # population std
    assert s.p50 == 4.5 and s.p90 == pytest.approx(7.6) and s.p99 == pytest.approx(8.86)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="0..100"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="no timed runs"):
        summarize([])
    assert math.isclose(summarize([3.0]).std, 0.0)
