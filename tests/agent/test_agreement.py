"""The per-task agreement measures of shadow mode (edge.agent.agreement): small pure functions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.agent import agreement as ag


def _det(index: int, box: list[float], label: str = "") -> dict[str, object]:
    return {"index": index, "label": label or str(index), "score": 0.9, "box": box}


def test_top1_compares_the_best_class_only() -> None:
    a = [{"index": 3, "score": 0.9}, {"index": 1, "score": 0.1}]
    assert ag.top1(a, [{"index": 3, "score": 0.5}, {"index": 7, "score": 0.4}]) == 1.0
    assert ag.top1(a, [{"index": 1, "score": 0.6}, {"index": 3, "score": 0.4}]) == 0.0
    assert ag.top1([], []) == 1.0 and ag.top1(a, []) == 0.0


def test_iou_of_boxes() -> None:
    assert ag.iou([0, 0, 1, 1], [0, 0, 1, 1]) == 1.0
    assert ag.iou([0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]) == 0.0
    assert ag.iou([0, 0, 1, 1], [0, 0, 0.5, 1]) == pytest.approx(0.5)


def test_detection_f1_matches_labels_and_boxes() -> None:
    a = [_det(1, [0, 0, 0.5, 0.5]), _det(2, [0.5, 0.5, 1, 1])]
    assert ag.detection_f1(a, a) == 1.0
    assert ag.detection_f1([], []) == 1.0 and ag.detection_f1(a, []) == 0.0
    # one of two found at the same place, one extra elsewhere: 1 match, F1 = 2*1/(2+2)
    c = [_det(1, [0.02, 0, 0.5, 0.5]), _det(2, [0, 0.6, 0.2, 0.9])]
    assert ag.detection_f1(a, c) == pytest.approx(0.5)
    # same place, another label: no match
    assert ag.detection_f1(a[:1], [_det(5, [0, 0, 0.5, 0.5])]) == 0.0
    # IoU below 0.5: no match
    assert ag.detection_f1(a[:1], [_det(1, [0, 0, 0.5, 0.2])]) == 0.0
    # one candidate box cannot match two reference boxes
    assert ag.detection_f1(a[:1] * 2, a[:1]) == pytest.approx(2 * 1 / 3)


def test_keypoint_agreement_is_one_minus_the_mean_distance() -> None:
    a = [{"name": "nose", "x": 0.5, "y": 0.5}, {"name": "left_eye", "x": 0.4, "y": 0.4}]
    assert ag.keypoint_agreement(a, a) == 1.0
    moved = [{"name": "nose", "x": 0.5, "y": 0.7}, {"name": "left_eye", "x": 0.4, "y": 0.4}]
    assert ag.keypoint_agreement(a, moved) == pytest.approx(0.9)
    far = [{"name": "nose", "x": 0.0, "y": 2.0}, {"name": "left_eye", "x": 2.0, "y": 0.0}]
    assert ag.keypoint_agreement(a, far) == 0.0  # clipped
    assert ag.keypoint_agreement(a, []) == 0.0


def test_segment_agreement_is_one_minus_half_the_fraction_distance() -> None:
    a = [{"index": 0, "fraction": 0.75}, {"index": 15, "fraction": 0.25}]
    assert ag.segment_agreement(a, a) == 1.0
    b = [{"index": 0, "fraction": 0.5}, {"index": 15, "fraction": 0.5}]
    assert ag.segment_agreement(a, b) == pytest.approx(0.75)
    assert ag.segment_agreement(a, [{"index": 3, "fraction": 1.0}]) == 0.0


def test_sqnr_maps_40_db_and_up_to_one_and_0_db_and_down_to_zero() -> None:
    rng = np.random.default_rng(0)
    ref = [rng.normal(size=(1, 64)).astype(np.float32)]
    assert ag.sqnr_agreement(ref, ref) == 1.0
    noisy20 = [ref[0] + 0.1 * ref[0]]  # noise 10 % of the signal: 20 dB
    assert ag.sqnr_db(ref, noisy20) == pytest.approx(20.0, abs=1e-3)
    assert ag.sqnr_agreement(ref, noisy20) == pytest.approx(0.5, abs=1e-4)
    assert ag.sqnr_agreement(ref, [-ref[0]]) == 0.0  # noise twice the signal: below 0 dB
    assert ag.sqnr_agreement(ref, [np.zeros((1, 32), np.float32)]) == 0.0  # another shape
    assert ag.sqnr_db(ref, [ref[0][:, :10]]) == -math.inf


def test_agreement_dispatches_by_the_active_task() -> None:
    top = {"top_k": [{"index": 1}]}
    assert ag.agreement("classifier", top, top) == 1.0
    assert ag.agreement("classifier", top, {"detections": []}) == 0.0  # a candidate of another task
    pose = {"poses": [{"pose_score": 0.9, "keypoints": [{"name": "nose", "x": 0.1, "y": 0.1}]}]}
    assert ag.agreement("pose", pose, pose) == 1.0
    out = [np.ones((2, 2), np.float32)]
    assert ag.agreement("embedding", {}, {}, out, out) == 1.0
    assert {ag.metric_for(t) for t in ("classifier", "detector", "pose", "segmentation", "generic")} == {
        "top1",
        "detection_f1",
        "keypoint_distance",
        "segment_fractions",
        "sqnr",
    }
