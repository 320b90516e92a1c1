"""Population stability index: known values, properties, and the per-device baseline tracker."""

from __future__ import annotations

import math

import pytest

from edge.watch.drift import OTHER, DriftTracker, histogram, psi


def test_psi_identical_is_zero_and_scale_free() -> None:
    assert psi({"a": 5, "b": 5}, {"a": 5, "b": 5}) == 0.0
    assert psi({"a": 1, "b": 3}, {"a": 100, "b": 300}) == pytest.approx(0.0, abs=1e-12)


def test_psi_known_value_two_bins() -> None:
    # (0.9-0.5) ln(0.9/0.5) + (0.1-0.5) ln(0.1/0.5) = 0.4 ln 1.8 + 0.4 ln 5
    expected = 0.4 * math.log(1.8) + 0.4 * math.log(5)
    assert expected == pytest.approx(0.878890, abs=1e-6)
    assert psi({"a": 50, "b": 50}, {"a": 90, "b": 10}) == pytest.approx(expected, rel=1e-12)
    assert psi({"a": 90, "b": 10}, {"a": 50, "b": 50}) == pytest.approx(expected, rel=1e-12)  # symmetric


def test_psi_label_missing_on_one_side_uses_epsilon() -> None:
    # b never seen in the baseline: its proportion there is taken as 1e-4
    expected = (0.99 - 1.0) * math.log(0.99 / 1.0) + (0.01 - 1e-4) * math.log(0.01 / 1e-4)
    assert psi({"a": 100}, {"a": 99, "b": 1}) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.045692, abs=1e-6)


def test_psi_grows_with_the_shift() -> None:
    base = {"cat": 70, "dog": 20, "bird": 10}
    small = psi(base, {"cat": 65, "dog": 25, "bird": 10})
    big = psi(base, {"cat": 10, "dog": 20, "bird": 70})
    assert 0 < small < 0.1 < 0.25 < big


def test_psi_rejects_empty_histograms() -> None:
    with pytest.raises(ValueError, match="at least one count"):
        psi({}, {"a": 1})
    with pytest.raises(ValueError, match="epsilon"):
        psi({"a": 1}, {"a": 1}, epsilon=0)


def test_histogram_keeps_other_apart_from_a_label_called_other() -> None:
    h = histogram({"counts": {"other": 2, "cat": 3}, "other": 4})
    assert h == {"other": 2, "cat": 3, OTHER: 4}


def test_tracker_baseline_min_size_and_new_model() -> None:
    t = DriftTracker(min_inferences=10)
    assert t.update({"counts": {"a": 3}, "other": 0}, "sha1") is None  # too small for a baseline
    assert t.update({"counts": {"a": 5, "b": 5}, "other": 0}, "sha1") == 0.0  # baseline itself
    assert t.update({"counts": {"a": 9, "b": 1}, "other": 0}, "sha1") == pytest.approx(
        0.4 * math.log(1.8) + 0.4 * math.log(5)
    )
    assert t.update({"counts": {"a": 1}, "other": 0}, "sha1") == t.psi  # small window: verdict kept
    assert t.update(None, "sha1") == t.psi  # an older agent without histograms
    # another model predicts differently by design: a new baseline, not an alarm
    assert t.update({"counts": {"z": 10}, "other": 0}, "sha2") == 0.0
    assert t.baseline == {"z": 10}
