"""Model outputs -> immutable results (pycoral's adapters, runtime-agnostic).

``edge.inference.tasks.select`` decides the task and decoder from the output signature; ``decode``
runs that decoder (``edge.inference.tasks``) and returns the prediction's result fields. Classifier
top-k and the generic (de-quantized, capped) outputs live here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.inference.preprocess import dequantize
from edge.inference.tasks import detect, embedding, pose, segment
from edge.inference.tasks.detect import Detection
from edge.inference.tasks.geometry import Geometry
from edge.inference.tasks.select import (
    CLASSIFIER,
    DETECTOR,
    EMBEDDING,
    GENERIC,
    POSE,
    SEGMENTATION,
    TaskChoice,
    posenet_outputs,
)
from edge.model.runtime import TensorSpec

__all__ = [
    "CLASSIFIER",
    "DETECTOR",
    "EMBEDDING",
    "GENERIC",
    "POSE",
    "SEGMENTATION",
    "Class",
    "Detection",
    "Decoded",
    "Settings",
    "classify",
    "decode",
    "generic",
]
YOLO_THRESHOLD = 0.25  # a raw head scores all 8400 anchors: threshold 0 ("unset") would keep noise


@dataclass(frozen=True)
class Class:
    index: int
    label: str | None
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": round(self.score, 6)}


def classify(
    output: np.ndarray, spec: TensorSpec, labels: Mapping[int, str], top_k: int = 5, threshold: float = 0.0
) -> tuple[Class, ...]:
    """Top-k classes, highest score first. Ranks on the de-quantized scores (uint8 safe)."""
    values = np.asarray(output).reshape(-1)
    k = max(0, min(top_k, values.size))
    if spec.quantized and spec.scale > 0:
        # De-quantizing is increasing when the scale is positive: rank the raw 8-bit values (numpy
        # radix-sorts them) and de-quantize only the k kept, not every class (1,000+ per image).
        order = np.argsort(values, kind="stable")[::-1][:k]
        scores = dequantize(values[order], spec)
    else:
        everything = dequantize(values, spec)
        order = np.argsort(everything, kind="stable")[::-1][:k]
        scores = everything[order]
    return tuple(
        Class(int(i), labels.get(int(i)), float(s))
        for i, s in zip(order.tolist(), scores.tolist(), strict=True)
        if s >= threshold
    )


def generic(
    outputs: Sequence[np.ndarray], specs: Sequence[TensorSpec], max_values: int = 1024
) -> list[dict[str, Any]]:
    """De-quantized outputs as JSON-able dicts (capped, so a big tensor cannot flood MQTT)."""
    result = []
    for o, s in zip(outputs, specs):
        real = dequantize(np.asarray(o), s)
        flat = real.reshape(-1)
        result.append(
            {
                "name": s.name,
                "shape": list(real.shape),
                "values": [round(float(v), 6) for v in flat[:max_values]],
                "truncated": bool(flat.size > max_values),
            }
        )
    return result


@dataclass
class Settings:
    """The postprocessing knobs; ``set`` commands swap in a changed copy at run time."""

    top_k: int = 5
    threshold: float = 0.0  # 0: the task's default (0.25 for raw YOLO heads, 0.2 for multi-pose)
    max_output_values: int = 1024
    iou: float = 0.45
    max_detections: int = 100
    full_embedding: bool = False
    mask: bool = False  # also render the segmentation mask as a PNG


@dataclass(frozen=True)
class Decoded:
    primary: (
        str  # the result's main key: top_k / detections / keypoints / poses / segments / embedding / outputs
    )
    fields: dict[str, Any]  # every result key of the prediction message (JSON-able)
    mask_png: bytes | None = None


def decode(
    choice: TaskChoice,
    outputs: Sequence[np.ndarray],
    specs: Sequence[TensorSpec],
    labels: Mapping[int, str],
    tuning: Settings,
    geometry: Geometry | None = None,
) -> Decoded:
    """Run ``choice.decoder`` on the outputs; boxes and keypoints come back on the original image."""
    d = choice.decoder
    if d == "top_k":
        top = classify(outputs[0], specs[0], labels, tuning.top_k, tuning.threshold)
        return Decoded("top_k", {"top_k": [c.as_dict() for c in top]})
    if d in ("yolo_v8", "yolo_v5"):
        spec = specs[0]
        found = detect.decode_yolo(
            outputs[0],
            threshold=tuning.threshold or YOLO_THRESHOLD,
            iou=tuning.iou,
            max_detections=tuning.max_detections,
            layout=d[-2:],
            input_size=_input_size(geometry),
            scale=spec.scale if spec.quantized else 0.0,
            zero_point=spec.zero_point,
        )
        return _detections(detect.to_detections(found, labels, geometry))
    if d == "yolo_seg":
        head = next(i for i, o in enumerate(outputs) if np.ndim(o) == 3)  # the other one: the prototypes
        protos = 1 - head
        found, masks = detect.decode_yolo_seg(
            outputs[head],
            dequantize(np.asarray(outputs[protos]), specs[protos]),
            threshold=tuning.threshold or YOLO_THRESHOLD,
            iou=tuning.iou,
            max_detections=tuning.max_detections,
            input_size=_input_size(geometry),
            scale=specs[head].scale if specs[head].quantized else 0.0,
            zero_point=specs[head].zero_point,
        )
        classes = segment.instance_map(masks, found.classes, found.scores)
        segs = tuple(s for s in segment.segments(classes, labels, geometry) if s.index != segment.BACKGROUND)
        dets = _detections(detect.to_detections(found, labels, geometry))
        png = segment.mask_png(classes, geometry) if tuning.mask else None
        return Decoded("detections", {**dets.fields, "segments": [s.as_dict() for s in segs]}, png)
    if d == "ssd_postprocess":
        real = [dequantize(np.asarray(o), s) for o, s in zip(outputs, specs)]
        found = detect.decode_ssd(
            real,
            [s.name for s in specs],
            threshold=tuning.threshold,
            max_detections=tuning.max_detections,
            input_size=_input_size(geometry),
        )
        return _detections(detect.to_detections(found, labels, geometry))
    if d in ("movenet_single", "posenet"):
        real = [dequantize(np.asarray(o), s) for o, s in zip(outputs, specs)]
        if d == "movenet_single":
            one = pose.movenet_single(real[0], geometry)
        else:
            heat, off = posenet_outputs([r.shape for r in real]) or (0, 1)
            one = pose.posenet(real[heat], real[off], _input_size(geometry) or (1, 1), geometry)
        return Decoded("keypoints", one.as_dict())
    if d in ("movenet_multi", "yolo_pose"):
        real0 = dequantize(np.asarray(outputs[0]), specs[0])
        poses = (
            pose.movenet_multi(real0, tuning.threshold or 0.2, geometry)
            if d == "movenet_multi"
            else pose.yolo_pose(
                real0,
                threshold=tuning.threshold or YOLO_THRESHOLD,
                iou=tuning.iou,
                max_detections=tuning.max_detections,
                input_size=_input_size(geometry),
                geometry=geometry,
            )
        )
        return Decoded("poses", {"poses": [p.as_dict() for p in poses]})
    if d in ("class_map", "class_scores"):
        classes = segment.class_map(outputs[0])
        segs = segment.segments(classes, labels, geometry, min_fraction=tuning.threshold)
        png = segment.mask_png(classes, geometry) if tuning.mask else None
        return Decoded("segments", {"segments": [s.as_dict() for s in segs]}, png)
    if d == "embedding":
        vec = dequantize(np.asarray(outputs[0]), specs[0])
        return Decoded("embedding", {"embedding": embedding.embedding(vec, tuning.full_embedding).as_dict()})
    return Decoded("outputs", {"outputs": generic(outputs, specs, tuning.max_output_values)})


def _input_size(geometry: Geometry | None) -> tuple[int, int] | None:
    return geometry.dst_size if geometry is not None else None


def _detections(found: tuple[Detection, ...]) -> Decoded:
    return Decoded("detections", {"detections": [d.as_dict() for d in found], "counts": detect.counts(found)})
