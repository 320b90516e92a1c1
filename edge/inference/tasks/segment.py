"""Segmentation outputs -> per-class area fractions on the original image, and an optional PNG mask.

A model either gives the class per pixel itself ([1,H,W] integers, e.g. DeepLab's ArgMax output) or
per-class logits/scores ([1,H,W,C], float or quantized) of which we take the argmax (quantization
has a positive scale, so the argmax of the raw values is the argmax of the real ones). Instance
segmentation models (YOLO-seg) give one mask per detection: :func:`instance_map` paints them into a
class map. With letterboxing, only the part of the mask that covers the image counts.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from edge.errors import InputError
from edge.inference.tasks.geometry import Geometry

BACKGROUND = 255  # instance-segmentation class maps (YOLO-seg): pixels no instance covers
MASK_MAX_SIDE = 256  # the published PNG mask's longer side, at most
MASK_MAX_BYTES = 64 * 1024  # and its size: halved until it fits (an MQTT message, not a file transfer)


@dataclass(frozen=True)
class Segment:
    index: int
    label: str | None
    fraction: float  # of the original image's area

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "fraction": round(self.fraction, 6)}


def class_map(output: np.ndarray) -> np.ndarray:
    """[1,H,W] / [H,W] class indices, or [1,H,W,C] scores -> [H,W] class indices."""
    arr = np.asarray(output)
    if arr.ndim == 4 and arr.shape[0] == 1:
        if arr.shape[-1] == 1:  # one channel: the class index itself (e.g. a quantized ArgMax)
            return arr[0, ..., 0].astype(np.int64, copy=False)
        return arr[0].argmax(axis=-1)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(
            f"a segmentation output is [1,H,W] class indices or [1,H,W,C] scores; received "
            f"{list(np.shape(output))}",
            "pick the task by hand (--task generic)",
        )
    if not np.issubdtype(arr.dtype, np.integer):
        arr = np.rint(arr)
    return arr.astype(np.int64, copy=False)


def instance_map(masks: np.ndarray, classes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """[K,H,W] instance masks -> [H,W] class map: where instances overlap, the best-scoring one's class;
    :data:`BACKGROUND` where none is."""
    k, h, w = masks.shape
    if k == 0:
        return np.full((h, w), BACKGROUND, np.int64)
    rank = (np.argsort(np.argsort(scores, kind="stable"), kind="stable") + 1).astype(np.int16)  # 1: worst
    top = (masks * rank[:, None, None]).argmax(axis=0)  # per pixel, the best instance covering it
    return np.where(masks.any(axis=0), np.asarray(classes, np.int64)[top], BACKGROUND)


def segments(
    classes: np.ndarray,
    labels: Mapping[int, str],
    geometry: Geometry | None = None,
    min_fraction: float = 0.0,
) -> tuple[Segment, ...]:
    """Classes present, largest area first (ties: lower index first)."""
    plane = geometry.crop_content(classes) if geometry is not None else classes
    flat = plane.reshape(-1)
    if flat.size == 0:
        return ()
    if flat.min(initial=0) < 0:
        raise InputError("the segmentation output holds negative class indices", "pick --task generic")
    counts = np.bincount(flat)
    present = np.flatnonzero(counts)
    fractions = counts[present] / flat.size
    order = np.lexsort((present, -fractions))
    return tuple(
        Segment(int(present[i]), labels.get(int(present[i])), float(fractions[i]))
        for i in order
        if fractions[i] >= min_fraction
    )


def mask_png(
    classes: np.ndarray,
    geometry: Geometry | None = None,
    max_side: int = MASK_MAX_SIDE,
    max_bytes: int = MASK_MAX_BYTES,
) -> bytes:
    """The class map as an 8-bit grayscale PNG (pixel value = class index, 255 for 255 and over),
    covering the original image, aspect ratio kept, longer side <= ``max_side``, size <= ``max_bytes``."""
    plane = geometry.crop_content(classes) if geometry is not None else classes
    img = Image.fromarray(np.minimum(plane, 255).astype(np.uint8), mode="L")
    if geometry is not None:  # back to the original image's aspect ratio
        sw, sh = geometry.src_size
        f = min(1.0, max(img.size) / max(sw, sh))
        img = img.resize((max(1, round(sw * f)), max(1, round(sh * f))), Image.Resampling.NEAREST)
    side = max_side
    while True:
        w, h = img.size
        f = min(1.0, side / max(w, h))
        small = img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.NEAREST)
        buf = io.BytesIO()
        small.save(buf, format="PNG", optimize=True)
        if buf.tell() <= max_bytes or side <= 8:
            return buf.getvalue()
        side //= 2
