"""bench.hs pure parts: statistics."""
from __future__ import annotations

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.hs.stats import median, percentile, rate, summarize

floats = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


def test_percentile_known_values() -> None:
    xs = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 100) == 5.0
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 25) == 2.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([7.0], 99) == 7.0
    assert median([1.0, 3.0, 2.0, 10.0]) == 2.5


def test_percentile_p99_of_100_is_near_the_top() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 99) == pytest.approx(99.01)


@pytest.mark.parametrize("q", [-1, 100.5, float("nan")])
def test_percentile_rejects_bad_q(q: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], q)


def test_empty_samples_rejected() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        summarize([])


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(floats, min_size=2, max_size=50))
def test_percentile_matches_statistics_inclusive_quartiles(xs: list[float]) -> None:
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    assert percentile(xs, 25) == pytest.approx(q1, rel=1e-9, abs=1e-6)
    assert percentile(xs, 50) == pytest.approx(q2, rel=1e-9, abs=1e-6)
    assert percentile(xs, 75) == pytest.approx(q3, rel=1e-9, abs=1e-6)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(floats, min_size=1, max_size=50), st.floats(0, 100), st.floats(0, 100))
def test_percentile_bounded_and_monotone(xs: list[float], a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    pa, pb = percentile(xs, lo), percentile(xs, hi)
    assert min(xs) - 1e-9 <= pa <= pb + 1e-9 <= max(xs) + 2e-9


def test_summarize_converts_seconds_to_ms() -> None:
    s = summarize([0.001, 0.002, 0.003, 0.004])
    assert s.count == 4
    assert s.min_ms == pytest.approx(1.0)
    assert s.max_ms == pytest.approx(4.0)
    assert s.mean_ms == pytest.approx(2.5)
    assert s.p50_ms == pytest.approx(2.5)
    assert s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
    assert s.to_json()["p99_ms"] == s.p99_ms


def test_rate() -> None:
    assert rate(100, 2.0) == 50.0
    assert rate(5, 0.0) == 0.0
    assert rate(5, -1.0) == 0.0
