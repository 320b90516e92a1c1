"""Pose outputs -> named keypoints on the original image (COCO-17).

* MoveNet single-pose: [1, 1, 17, 3], per keypoint ``y, x, score`` normalized to the input;
* MoveNet multi-pose: [1, P, 56], per pose 17 x (y, x, score), a box (ymin, xmin, ymax, xmax), a score;
* PoseNet: heatmaps [1, H, W, 17] and offsets [1, H, W, 34] (17 y then 17 x, input pixels), one pose
  from each keypoint's heatmap peak (the single-pose decoding of the TFLite PoseNet example);
* YOLOv8/v11-pose: [1, 5+51, N]: cx, cy, w, h, score, then 17 x (x, y, visibility); NMS'd like a detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import InputError
from edge.inference.tasks.detect import Boxes, nms_indices, xywh_to_yxyx
from edge.inference.tasks.geometry import Geometry

COCO_KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
K = len(COCO_KEYPOINTS)


@dataclass(frozen=True)
class Keypoint:
    name: str
    x: float  # normalized to the original image
    y: float
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "x": round(self.x, 6),
            "y": round(self.y, 6),
            "score": round(self.score, 6),
        }


@dataclass(frozen=True)
class Pose:
    keypoints: tuple[Keypoint, ...]
    score: float
    box: tuple[float, float, float, float] | None = None  # ymin, xmin, ymax, xmax on the original image

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pose_score": round(self.score, 6),
            "keypoints": [k.as_dict() for k in self.keypoints],
        }
        if self.box is not None:
            out["box"] = [round(v, 6) for v in self.box]
        return out


def _pose(
    yx: np.ndarray,
    scores: np.ndarray,
    score: float | None,
    geometry: Geometry | None,
    box: np.ndarray | None = None,
) -> Pose:
    pts = geometry.points_to_source(yx) if geometry is not None else np.asarray(yx, dtype=np.float32)
    kps = tuple(
        Keypoint(n, float(p[1]), float(p[0]), float(s)) for n, p, s in zip(COCO_KEYPOINTS, pts, scores)
    )
    b = None
    if box is not None:
        mapped = geometry.boxes_to_source(box) if geometry is not None else np.clip(box.reshape(1, 4), 0, 1)
        b = tuple(float(v) for v in mapped[0])
    # Single-pose models give no pose score: the mean keypoint confidence stands in for it.
    return Pose(kps, float(np.mean(scores)) if score is None else float(score), b)  # type: ignore[arg-type]


def movenet_single(output: np.ndarray, geometry: Geometry | None = None) -> Pose:
    arr = np.asarray(output, dtype=np.float32).reshape(-1, 3)
    if arr.shape[0] != K:
        raise InputError(
            f"a single-pose output holds 17 x (y, x, score); received {list(np.shape(output))}",
            "pick the task by hand (--task generic) for other pose models",
        )
    return _pose(arr[:, :2], arr[:, 2], None, geometry)


def movenet_multi(
    output: np.ndarray, threshold: float = 0.2, geometry: Geometry | None = None
) -> tuple[Pose, ...]:
    """[1, P, 56] -> poses whose score is at least ``threshold``, best first."""
    arr = np.asarray(output, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[-1] != 56:
        raise InputError(
            f"a multi-pose output is [1, P, 56]; received {list(arr.shape)}",
            "pick the task by hand (--task generic) for other pose models",
        )
    rows = arr[0]
    keep = np.flatnonzero(rows[:, 55] >= threshold)
    keep = keep[np.argsort(rows[keep, 55], kind="stable")[::-1]]
    out = []
    for r in rows[keep]:
        kp = r[:51].reshape(K, 3)
        out.append(_pose(kp[:, :2], kp[:, 2], float(r[55]), geometry, r[51:55]))
    return tuple(out)


def posenet(
    heatmaps: np.ndarray, offsets: np.ndarray, input_size: tuple[int, int], geometry: Geometry | None = None
) -> Pose:
    """Heatmaps [1,H,W,17] (logits) + offsets [1,H,W,34] -> one pose (``input_size`` = (width, height))."""
    hm = np.asarray(heatmaps, dtype=np.float32)[0]
    off = np.asarray(offsets, dtype=np.float32)[0]
    if hm.ndim != 3 or hm.shape[-1] != K or off.shape[:2] != hm.shape[:2] or off.shape[-1] != 2 * K:
        raise InputError(
            f"PoseNet outputs are heatmaps [1,H,W,17] and offsets [1,H,W,34]; received "
            f"{list(np.shape(heatmaps))} and {list(np.shape(offsets))}",
            "pick --task generic",
        )
    h, w, _ = hm.shape
    flat = hm.reshape(h * w, K).argmax(axis=0)
    gy, gx = np.divmod(flat, w)
    ks = np.arange(K)
    iw, ih = input_size
    py = gy / max(h - 1, 1) * ih + off[gy, gx, ks]
    px = gx / max(w - 1, 1) * iw + off[gy, gx, ks + K]
    scores = 1.0 / (1.0 + np.exp(-hm[gy, gx, ks]))
    return _pose(np.stack([py / ih, px / iw], axis=1), scores, None, geometry)


def yolo_pose(
    raw: np.ndarray,
    *,
    threshold: float = 0.25,
    iou: float = 0.45,
    max_detections: int = 20,
    input_size: tuple[int, int] | None = None,
    geometry: Geometry | None = None,
) -> tuple[Pose, ...]:
    """A float YOLOv8/v11-pose head [1, 56, N] -> poses with boxes, best first."""
    arr = np.asarray(raw, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[1] != 5 + 3 * K:
        raise InputError(f"a YOLO pose head is [1, 56, N]; received {list(arr.shape)}", "pick --task generic")
    head = arr[0]
    cand = np.flatnonzero(head[4] >= threshold)
    if cand.size == 0:
        return ()
    cols = head[:, cand].T
    boxes = xywh_to_yxyx(cols[:, :4], input_size)
    rows = nms_indices(Boxes(boxes, cols[:, 4].copy(), np.zeros(cand.size, np.int64)), iou, max_detections)
    poses = []
    scale = np.ones(2, np.float32)
    if float(np.abs(cols[:, 5:].reshape(-1, K, 3)[..., :2]).max()) > 2.0 and input_size is not None:
        scale = np.asarray((input_size[1], input_size[0]), np.float32)  # pixels -> normalized (y, x)
    for r in rows:
        kp = cols[r, 5:].reshape(K, 3)
        poses.append(_pose(kp[:, [1, 0]] / scale, kp[:, 2], float(cols[r, 4]), geometry, boxes[r]))
    return tuple(poses)
