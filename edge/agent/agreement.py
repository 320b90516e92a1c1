"""How much a candidate model agrees with the active one on one input, 0..1, per task (shadow mode).

Pure functions over the decoded results the agent publishes (docs/mqtt.md ``predictions``), or over the
raw output arrays for tasks without a meaningful decoded result (embeddings, generic outputs):

* classifier: top-1 class index equal (1) or not (0);
* detector: F1 of the candidate's detections against the active model's, a pair matching when the
  labels are equal and the boxes' IoU >= 0.5 (greedy, highest IoU first); 1 when both found nothing;
* pose: 1 - mean distance between same-named keypoints (normalized coordinates), clipped to 0..1;
* segmentation: 1 - sum over classes of |fraction difference| / 2 (the share of the picture labelled alike);
* anything else: output SQNR, ``clip(SQNR_dB / 40, 0, 1)``: 40 dB (noise 1 % of the signal's amplitude)
  or more is 1, 0 dB (noise as large as the signal) or less is 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

METRICS = {
    "classifier": "top1",
    "detector": "detection_f1",
    "pose": "keypoint_distance",
    "segmentation": "segment_fractions",
}
SQNR = "sqnr"
SQNR_FULL_DB = 40.0  # an SQNR this high (or higher) counts as full agreement
IOU_MATCH = 0.5


def metric_for(task: str) -> str:
    """The name of the agreement measure of ``task`` (the shadow window's ``metric``)."""
    return METRICS.get(task, SQNR)


def top1(active: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]]) -> float:
    """``top_k`` lists, best first."""
    if not active or not candidate:
        return 1.0 if not active and not candidate else 0.0
    return 1.0 if active[0].get("index") == candidate[0].get("index") else 0.0


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``[ymin, xmin, ymax, xmax]`` boxes."""
    ih = min(a[2], b[2]) - max(a[0], b[0])
    iw = min(a[3], b[3]) - max(a[1], b[1])
    if ih <= 0 or iw <= 0:
        return 0.0
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detection_f1(
    active: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]], iou_min: float = IOU_MATCH
) -> float:
    """``detections`` lists ({index, label, box}); the active model's are taken as the reference."""
    if not active and not candidate:
        return 1.0
    if not active or not candidate:
        return 0.0
    pairs = sorted(
        (
            (iou(a["box"], c["box"]), i, j)
            for i, a in enumerate(active)
            for j, c in enumerate(candidate)
            if a.get("index") == c.get("index")
        ),
        reverse=True,
    )
    used_a: set[int] = set()
    used_c: set[int] = set()
    matched = 0
    for score, i, j in pairs:
        if score < iou_min:
            break
        if i in used_a or j in used_c:
            continue
        used_a.add(i)
        used_c.add(j)
        matched += 1
    return 2.0 * matched / (len(active) + len(candidate))


def keypoint_agreement(active: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]]) -> float:
    """``keypoints`` lists ({name, x, y}): 1 - mean distance of the keypoints both name, clipped to 0..1."""
    cand = {k["name"]: k for k in candidate}
    dists = [
        math.hypot(float(k["x"]) - float(cand[k["name"]]["x"]), float(k["y"]) - float(cand[k["name"]]["y"]))
        for k in active
        if k["name"] in cand
    ]
    if not dists:
        return 1.0 if not active and not candidate else 0.0
    return min(1.0, max(0.0, 1.0 - sum(dists) / len(dists)))


def segment_agreement(active: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]]) -> float:
    """``segments`` lists ({index, fraction}): 1 - total variation distance of the class fractions."""
    a = {s["index"]: float(s["fraction"]) for s in active}
    c = {s["index"]: float(s["fraction"]) for s in candidate}
    diff = sum(abs(a.get(k, 0.0) - c.get(k, 0.0)) for k in a.keys() | c.keys())
    return min(1.0, max(0.0, 1.0 - diff / 2.0))


def sqnr_db(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """Signal-to-noise ratio of ``other`` against ``reference`` (dB); -inf when the shapes differ."""
    if len(reference) != len(other) or any(r.shape != o.shape for r, o in zip(reference, other)):
        return -math.inf
    ref = np.concatenate([np.asarray(r, np.float64).ravel() for r in reference])
    noise = ref - np.concatenate([np.asarray(o, np.float64).ravel() for o in other])
    signal_power, noise_power = float(np.sum(ref * ref)), float(np.sum(noise * noise))
    if noise_power == 0.0:
        return math.inf
    if signal_power == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


def sqnr_agreement(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """``clip(SQNR_dB / 40, 0, 1)`` over the de-quantized outputs (see the module doc)."""
    db = sqnr_db(reference, other)
    if math.isinf(db):
        return 1.0 if db > 0 else 0.0
    return min(1.0, max(0.0, db / SQNR_FULL_DB))


def _pose_keypoints(fields: Mapping[str, Any]) -> Sequence[Mapping[str, Any]] | None:
    """Single-pose ``keypoints``, or the best pose's of a multi-pose result."""
    if "keypoints" in fields:
        return list(fields["keypoints"])
    poses = fields.get("poses")
    if poses is None:
        return None
    return list(max(poses, key=lambda p: p.get("pose_score", 0.0))["keypoints"]) if poses else []


def agreement(
    task: str,
    active: Mapping[str, Any],
    candidate: Mapping[str, Any],
    active_outputs: Sequence[np.ndarray] = (),
    candidate_outputs: Sequence[np.ndarray] = (),
) -> float:
    """Agreement on one input. ``active``/``candidate``: the decoded result fields of each model (the
    prediction's keys, e.g. ``{"top_k": [...]}``); ``*_outputs``: the de-quantized output arrays (SQNR).
    A candidate that does not produce the active task's result (another task) agrees 0."""
    if task == "classifier":
        return top1(active["top_k"], candidate["top_k"]) if "top_k" in candidate else 0.0
    if task == "detector":
        return (
            detection_f1(active["detections"], candidate["detections"]) if "detections" in candidate else 0.0
        )
    if task == "pose":
        a, c = _pose_keypoints(active), _pose_keypoints(candidate)
        return keypoint_agreement(a, c) if a is not None and c is not None else 0.0
    if task == "segmentation":
        return (
            segment_agreement(active["segments"], candidate["segments"]) if "segments" in candidate else 0.0
        )
    return sqnr_agreement(active_outputs, candidate_outputs)
