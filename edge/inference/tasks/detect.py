"""Object detection outputs -> boxes on the original image, vectorized numpy.

Three families of detector output:

* the ``TFLite_Detection_PostProcess`` op (SSD MobileNet, EfficientDet-Lite): boxes [1,N,4],
  classes [1,N], scores [1,N], count [1], in either exporter's order; NMS already done by the op;
* raw YOLOv8/v11 heads, ``[1, 4+C, N]``: cx, cy, w, h then C class scores per anchor column;
* raw YOLOv5 heads, ``[1, N, 5+C]``: cx, cy, w, h, objectness, C class scores per anchor row;
* YOLO segmentation heads: the same with M mask coefficients after the class scores, and a second
  output of M mask prototypes (:func:`decode_yolo_seg`).

YOLO heads may be float or int8/uint8 (one scale/zero point for the whole tensor): the score
threshold is applied in the quantized domain, so only the candidates are ever de-quantized. Boxes
may be in input pixels or normalized (exporters differ); both are recognised. NMS is greedy and
class-aware (boxes of different classes never suppress each other).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import InputError
from edge.inference.tasks.geometry import Geometry

YOLO_LAYOUTS = ("auto", "v8", "v5")
MAX_CANDIDATES = 2000  # boxes over the threshold kept for NMS, best first (a bound on NMS time)


@dataclass(frozen=True)
class Detection:
    index: int
    label: str | None
    score: float
    box: tuple[float, float, float, float]  # ymin, xmin, ymax, xmax, normalized to the original image

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "label": self.label,
            "score": round(self.score, 6),
            "box": [round(v, 6) for v in self.box],
        }


@dataclass(frozen=True)
class Boxes:
    """Decoder output before labels and geometry: [N,4] yxyx normalized to the input, [N] scores/classes."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, idx: np.ndarray) -> Boxes:
        return Boxes(self.boxes[idx], self.scores[idx], self.classes[idx])


def _empty() -> Boxes:
    return Boxes(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def to_detections(
    found: Boxes, labels: Mapping[int, str], geometry: Geometry | None = None
) -> tuple[Detection, ...]:
    """Immutable records, best first, boxes mapped back to the original image."""
    order = np.argsort(found.scores, kind="stable")[::-1]
    boxes = found.boxes[order]
    boxes = geometry.boxes_to_source(boxes) if geometry is not None else np.clip(boxes, 0.0, 1.0)
    return tuple(
        Detection(int(c), labels.get(int(c)), float(s), (float(b[0]), float(b[1]), float(b[2]), float(b[3])))
        for c, s, b in zip(found.classes[order].tolist(), found.scores[order].tolist(), boxes)
    )


def counts(detections: Sequence[Detection]) -> dict[str, int]:
    """{label: n}; a class without a label is counted under its index."""
    out: dict[str, int] = {}
    for d in detections:
        key = d.label if d.label is not None else str(d.index)
        out[key] = out.get(key, 0) + 1
    return out


def nms(found: Boxes, iou: float, max_detections: int) -> Boxes:
    """Greedy class-aware non-maximum suppression: keep the best box, drop same-class boxes that
    overlap it by more than ``iou``, repeat. Each step is one vectorized IoU against the remainder."""
    return found.take(nms_indices(found, iou, max_detections))


def nms_indices(found: Boxes, iou: float, max_detections: int) -> np.ndarray:
    """The rows :func:`nms` keeps, best first."""
    n = len(found)
    if n == 0 or max_detections <= 0:
        return np.zeros(0, np.int64)
    order = np.argsort(found.scores, kind="stable")[::-1]
    # Shift each class into its own region of the plane, so one pass never mixes classes.
    span = float(np.abs(found.boxes).max()) + 1.0
    shifted = found.boxes[order] + (found.classes[order].astype(np.float32) * span)[:, None]
    y1, x1, y2, x2 = (np.ascontiguousarray(shifted[:, k]) for k in range(4))
    areas = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    alive = np.ones(n, dtype=bool)
    limit = np.float32(iou)
    keep: list[int] = []
    for i in range(n):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) >= max_detections:
            break
        # Boxes after i, in score order, are slices (views, no gathers); in-place ops, few temporaries.
        s = slice(i + 1, n)
        h = np.minimum(y2[s], y2[i])
        h -= np.maximum(y1[s], y1[i])
        np.maximum(h, 0, out=h)
        w = np.minimum(x2[s], x2[i])
        w -= np.maximum(x1[s], x1[i])
        np.maximum(w, 0, out=w)
        h *= w  # intersection
        union = areas[s] + areas[i]
        union -= h
        union *= limit
        alive[s] &= h <= union  # IoU <= iou, without a division
    return order[np.asarray(keep, dtype=np.int64)]


def yolo_layout(shape: Sequence[int], layout: str = "auto") -> str:
    """``v8`` for [1, 4+C, N] (attributes on rows), ``v5`` for [1, N, 5+C] (one anchor per row)."""
    if layout not in YOLO_LAYOUTS:
        raise InputError(
            f"YOLO layout must be one of {', '.join(YOLO_LAYOUTS)}; received {layout!r}",
            "use v8 for [1,4+C,N] heads (YOLOv8/v11), v5 for [1,N,5+C] (YOLOv5)",
        )
    dims = tuple(shape)
    if len(dims) != 3 or dims[0] != 1 or min(dims[1:]) < 5:
        raise InputError(
            f"a YOLO head has shape [1, 4+C, N] or [1, N, 5+C]; received {list(dims)}",
            "pick the task by hand (--task generic) for other outputs",
        )
    if layout != "auto":
        return layout
    # Anchors always outnumber attributes (8400 vs 84 at 640x640): the long axis is the anchor axis.
    return "v8" if dims[1] < dims[2] else "v5"


def _quantized_threshold(threshold: float, scale: float, zero_point: int) -> float:
    """The raw value at or above which a quantized score is >= threshold (scale > 0)."""
    return math.ceil(threshold / scale + zero_point - 1e-6)


def decode_yolo(
    raw: np.ndarray,
    *,
    threshold: float = 0.25,
    iou: float = 0.45,
    max_detections: int = 100,
    layout: str = "auto",
    input_size: tuple[int, int] | None = None,
    scale: float = 0.0,
    zero_point: int = 0,
    max_candidates: int = MAX_CANDIDATES,
) -> Boxes:
    """A raw YOLO head -> NMS'd boxes normalized to the input (``input_size`` = (width, height) of the
    input, needed when the head gives pixels). ``scale``/``zero_point``: the tensor's quantization."""
    found, _ = _yolo_candidates(
        raw, threshold, layout, input_size, scale, zero_point, max_candidates, extra=0
    )
    return nms(found, iou, max_detections)


def decode_yolo_seg(
    raw: np.ndarray,
    protos: np.ndarray,
    *,
    threshold: float = 0.25,
    iou: float = 0.45,
    max_detections: int = 100,
    layout: str = "auto",
    input_size: tuple[int, int] | None = None,
    scale: float = 0.0,
    zero_point: int = 0,
) -> tuple[Boxes, np.ndarray]:
    """A YOLO segmentation head ([1, 4+C+M, N] or [1, N, 5+C+M]: M mask coefficients after the class
    scores) and its prototypes ([1, H, W, M] or [1, M, H, W], de-quantized) -> NMS'd boxes and one
    [H, W] boolean mask per box, at the prototypes' resolution over the whole input.

    Each mask is sigmoid(coefficients . prototypes) > 0.5, i.e. the dot product > 0, kept inside its
    box: one [H*W, M] x [M, K] product for all boxes."""
    p = np.asarray(protos, dtype=np.float32)
    if p.ndim != 4 or p.shape[0] != 1:
        raise InputError(
            f"YOLO mask prototypes are [1, H, W, M] or [1, M, H, W]; received {list(p.shape)}",
            "pick --task detector with a plain YOLO head, or --task generic",
        )
    planes = p[0] if p.shape[3] < p.shape[1] else np.moveaxis(p[0], 0, -1)  # [H, W, M]: M is the short axis
    mh, mw, m = planes.shape
    found, coefs = _yolo_candidates(
        raw, threshold, layout, input_size, scale, zero_point, MAX_CANDIDATES, extra=m
    )
    keep = nms_indices(found, iou, max_detections)
    found, coefs = found.take(keep), coefs[keep]
    # [H*W, M] x [M, K]: the prototypes in their own (NHWC) memory order, no copy; K masks as a view
    with _one_blas_thread():
        logits = planes.reshape(-1, m) @ coefs.T.astype(np.float32)
    masks = (logits > 0).reshape(mh, mw, -1).transpose(2, 0, 1)
    ys = (np.arange(mh, dtype=np.float32) + 0.5) / mh  # pixel centres, normalized like the boxes
    xs = (np.arange(mw, dtype=np.float32) + 0.5) / mw
    b = found.boxes
    in_y = (ys[None, :] >= b[:, 0:1]) & (ys[None, :] <= b[:, 2:3])  # [K, H]
    in_x = (xs[None, :] >= b[:, 1:2]) & (xs[None, :] <= b[:, 3:4])  # [K, W]
    masks &= in_y[:, :, None] & in_x[:, None, :]
    return found, masks


_blas: Any = None


def _one_blas_thread() -> Any:
    """numpy's BLAS (OpenBLAS) limited to one thread for the mask product. With its default (a thread
    per core) it is 3-4x slower whenever the cores are busy, as they are while the interpreter runs the
    next frame, and its spinning threads slow everything else (benchmarks/yolo_decode_bench.py)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController  # ~2 ms to find the libraries: once

        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def _yolo_candidates(
    raw: np.ndarray,
    threshold: float,
    layout: str,
    input_size: tuple[int, int] | None,
    scale: float,
    zero_point: int,
    max_candidates: int,
    extra: int,
) -> tuple[Boxes, np.ndarray]:
    """Boxes over the threshold (before NMS), and the ``extra`` trailing values of their anchors (the mask
    coefficients of a segmentation head, de-quantized; [K, 0] without)."""
    arr = np.asarray(raw)
    kind = yolo_layout(arr.shape, layout)
    quant = scale > 0 and np.issubdtype(arr.dtype, np.integer)
    cut = _quantized_threshold(threshold, scale, zero_point) if quant else threshold
    head = arr[0]
    if kind == "v8":
        end = head.shape[0] - extra
        cls_rows = head[4:end]  # [C, N]
        if cls_rows.shape[0] < 1:
            raise InputError(
                f"a YOLO head [1, 4+C{'+M' if extra else ''}, N] with {extra} mask values has no class "
                f"rows: {list(arr.shape)}",
                "pick --task generic",
            )
        best = cls_rows.max(axis=0)
        cand = np.flatnonzero(best >= cut)
        if cand.size == 0:
            return _empty(), np.zeros((0, extra), np.float32)
        cls_c = cls_rows[:, cand]
        classes = cls_c.argmax(axis=0)
        scores = _real(best[cand], quant, scale, zero_point)
        xywh = _real(head[:4, cand].T, quant, scale, zero_point)
        coefs = _real(head[end:, cand].T, quant, scale, zero_point)
    else:
        end = head.shape[1] - extra
        obj = head[:, 4]
        cand = np.flatnonzero(obj >= cut)  # score = obj * cls <= obj: rows under the cut cannot pass
        if cand.size == 0:
            return _empty(), np.zeros((0, extra), np.float32)
        rows = _real(head[cand], quant, scale, zero_point)
        cls_c = rows[:, 5:end]
        classes = cls_c.argmax(axis=1)
        scores = rows[:, 4] * cls_c[np.arange(cand.size), classes]
        passed = scores >= threshold
        rows, classes, scores = rows[passed], classes[passed], scores[passed]
        xywh = rows[:, :4]
        coefs = rows[:, end:]
    if scores.size > max_candidates:
        top = np.argpartition(scores, scores.size - max_candidates)[-max_candidates:]
        xywh, classes, scores, coefs = xywh[top], classes[top], scores[top], coefs[top]
    boxes = xywh_to_yxyx(xywh, input_size)
    return Boxes(boxes, scores.astype(np.float32), classes.astype(np.int64)), coefs


def _real(values: np.ndarray, quant: bool, scale: float, zero_point: int) -> np.ndarray:
    if quant:
        return (values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
    return values.astype(np.float32, copy=False)


def xywh_to_yxyx(xywh: np.ndarray, input_size: tuple[int, int] | None) -> np.ndarray:
    xywh = np.asarray(xywh, dtype=np.float32)
    if xywh.size and float(np.abs(xywh).max()) > 2.0:  # pixels, not fractions of the input
        if input_size is None:
            raise InputError(
                "this YOLO head gives boxes in pixels, but the input size is unknown",
                "pass input_size=(width, height) of the model input",
            )
        w, h = input_size
        xywh = xywh / np.asarray((w, h, w, h), dtype=np.float32)
    cx, cy, bw, bh = xywh[:, 0], xywh[:, 1], xywh[:, 2] / 2, xywh[:, 3] / 2
    return np.stack([cy - bh, cx - bw, cy + bh, cx + bw], axis=1)


def ssd_outputs(outputs: Sequence[np.ndarray], names: Sequence[str] = ()) -> tuple[int, int, int, int]:
    """Positions of (boxes, classes, scores, count) among the four outputs of the SSD post-process op.

    TF1 exporters order them boxes, classes, scores, count; TF2 and Model Maker (EfficientDet-Lite)
    scores, boxes, count, classes. Shapes tell boxes and count apart; classes are whole numbers and
    may exceed 1, scores lie in [0, 1]; names break a remaining tie."""
    if len(outputs) != 4:
        raise InputError(
            f"the SSD post-process op has 4 outputs; this model has {len(outputs)}",
            "pick the task by hand (--task generic) for other detectors",
        )
    arrs = [np.asarray(o) for o in outputs]
    boxes = [i for i, a in enumerate(arrs) if a.ndim == 3 and a.shape[-1] == 4]
    count = [i for i, a in enumerate(arrs) if a.size == 1 and i not in boxes]
    pair = [i for i in range(4) if i not in boxes and i not in count]
    if len(boxes) != 1 or len(count) != 1 or len(pair) != 2:
        raise InputError(
            f"outputs of shapes {[list(a.shape) for a in arrs]} are not boxes [1,N,4], classes "
            "[1,N], scores [1,N] and count [1]",
            "pick the task by hand (--task generic)",
        )

    # Only the first `count` rows are written by the op: the rest is whatever the buffer held.
    n = max(0, int(min(float(arrs[count[0]].reshape(-1)[0]), arrs[pair[0]].size)))

    def looks_like_classes(i: int) -> int:
        a = arrs[i].reshape(-1)[:n].astype(np.float64)
        whole = bool(np.all(a == np.round(a)))
        return 2 * whole + (a.max(initial=0) > 1.0)

    a, b = pair
    la, lb = looks_like_classes(a), looks_like_classes(b)
    if la == lb and names:
        if "score" in names[a].lower() or "class" in names[b].lower():
            la, lb = 0, 1
        elif "class" in names[a].lower() or "score" in names[b].lower():
            la, lb = 1, 0
    classes, scores = (a, b) if la >= lb else (b, a)
    return boxes[0], classes, scores, count[0]


def decode_ssd(
    outputs: Sequence[np.ndarray],
    names: Sequence[str] = (),
    *,
    threshold: float = 0.5,
    max_detections: int = 100,
    input_size: tuple[int, int] | None = None,
) -> Boxes:
    """De-quantized outputs of the SSD post-process op -> boxes normalized to the input."""
    bi, ci, si, ni = ssd_outputs(outputs, names)
    boxes = np.asarray(outputs[bi], dtype=np.float32).reshape(-1, 4)
    classes = np.asarray(outputs[ci]).reshape(-1)
    scores = np.asarray(outputs[si], dtype=np.float32).reshape(-1)
    n = int(min(float(np.asarray(outputs[ni]).reshape(-1)[0]), scores.size))
    boxes, classes, scores = boxes[:n], classes[:n], scores[:n]
    if boxes.size and float(boxes.max()) > 2.0 and input_size is not None:  # some exports give pixels
        w, h = input_size
        boxes = (boxes / np.asarray((h, w, h, w), dtype=np.float32)).astype(np.float32)
    keep = np.flatnonzero(scores >= threshold)
    keep = keep[np.argsort(scores[keep], kind="stable")[::-1]][:max_detections]
    return Boxes(boxes[keep], scores[keep], np.round(classes[keep]).astype(np.int64))
