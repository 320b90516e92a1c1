"""The metrics message's per-label histogram: what counts, how it is bounded, that the schema holds it."""

from __future__ import annotations

from collections import Counter

import pytest

from edge.agent.metrics import LABEL_TOP_N, LatencyWindow, label_histogram, predicted_labels
from edge.contract import messages, schemas


def test_predicted_labels_per_kind() -> None:
    top = [{"index": 3, "label": "cat", "score": 0.9}, {"index": 1, "label": "dog", "score": 0.1}]
    assert predicted_labels("top_k", top) == ("cat",)
    assert predicted_labels("top_k", [{"index": 7, "label": None, "score": 0.5}]) == ("7",)
    dets = [{"index": 0, "label": "person"}, {"index": 0, "label": "person"}, {"index": 2, "label": "car"}]
    assert predicted_labels("detections", dets) == ("person", "person", "car")
    assert predicted_labels("detections", []) == ()
    assert predicted_labels("outputs", [[1.0, 2.0]]) == ()


def test_histogram_is_bounded_top_n_plus_other() -> None:
    counts = Counter({f"l{i:03d}": 1000 - i for i in range(100)})
    h = label_histogram(counts)
    assert len(h["counts"]) == LABEL_TOP_N
    assert list(h["counts"])[:2] == ["l000", "l001"]
    assert h["other"] == sum(1000 - i for i in range(LABEL_TOP_N, 100))
    assert sum(h["counts"].values()) + h["other"] == sum(counts.values())
    # ties order by name: the same window always gives the same message
    assert list(label_histogram(Counter({"b": 1, "a": 1}), top_n=1)["counts"]) == ["a"]


def test_window_histogram_forgets_old_samples() -> None:
    w = LatencyWindow(window_s=10)
    w.add(5.0, now=0.0, labels=("cat",))
    w.add(5.0, now=8.0, labels=("dog",))
    w.add(5.0, now=9.0, labels=("dog",))
    assert w.snapshot(now=9.5)["labels"] == {"counts": {"dog": 2, "cat": 1}, "other": 0}
    assert w.snapshot(now=12.0)["labels"] == {"counts": {"dog": 2}, "other": 0}
    assert w.snapshot(now=30.0)["labels"] == {"counts": {}, "other": 0}


def _metrics(labels: object) -> dict[str, object]:
    w = LatencyWindow()
    w.add(3.0, labels=("cat",))
    snap = w.snapshot()
    snap["labels"] = labels
    return messages.metrics("pi-1", **snap, rss_mb=10.0, cpu_temp_c=None, spool_depth=0, dropped=0, errors=0)


@pytest.mark.parametrize("builtin", [False, True])
def test_schema_accepts_the_histogram_and_rejects_bad_ones(builtin: bool) -> None:
    good = _metrics({"counts": {"cat": 1}, "other": 0})
    assert schemas.problems("metrics", good, builtin=builtin) == []
    too_many = _metrics({"counts": {f"l{i}": 1 for i in range(LABEL_TOP_N + 1)}, "other": 0})
    assert schemas.problems("metrics", too_many, builtin=builtin)
    negative = _metrics({"counts": {"cat": -1}, "other": 0})
    assert schemas.problems("metrics", negative, builtin=builtin)
    no_other = _metrics({"counts": {"cat": 1}})
    assert schemas.problems("metrics", no_other, builtin=builtin)
    old_agent = _metrics(None)
    del old_agent["labels"]
    assert schemas.problems("metrics", old_agent, builtin=builtin) == []
