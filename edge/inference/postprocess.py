"""Model outputs -> immutable results (pycoral's adapters, runtime-agnostic).

``model_kind`` decides from the output details alone whether a model is a
classifier (one [1, N] or [N] output), an SSD-style detector (boxes, classes,
scores, count) or something else, whose outputs are returned de-quantized.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.inference.preprocess import dequantize
from edge.model.runtime import TensorSpec

CLASSIFIER, DETECTOR, GENERIC = "classifier", "detector", "generic"


@dataclass(frozen=True)
class Class:
    index: int
    label: str | None
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": round(self.score, 6)}


@dataclass(frozen=True)
class Detection:
    index: int
    label: str | None
    score: float
    box: tuple[float, float, float, float]  # ymin, xmin, ymax, xmax, relative to the input

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "label": self.label,
            "score": round(self.score, 6),
            "box": [round(v, 6) for v in self.box],
        }


def model_kind(outputs: Sequence[TensorSpec]) -> str:
    if len(outputs) == 1:
        shape = outputs[0].shape
        if len(shape) == 1 or (len(shape) == 2 and shape[0] == 1):
            return CLASSIFIER
    if len(outputs) == 4:
        ranks = sorted(len(o.shape) for o in outputs)
        if ranks == [1, 2, 2, 3] and any(len(o.shape) == 3 and o.shape[-1] == 4 for o in outputs):
            return DETECTOR
    return GENERIC


def classify(
    output: np.ndarray, spec: TensorSpec, labels: Mapping[int, str], top_k: int = 5, threshold: float = 0.0
) -> tuple[Class, ...]:
    """Top-k classes, highest score first. Ranks on the de-quantized scores (uint8 safe)."""
    scores = dequantize(np.asarray(output).reshape(-1), spec)
    k = max(0, min(top_k, scores.size))
    order = np.argsort(scores, kind="stable")[::-1][:k]
    return tuple(
        Class(int(i), labels.get(int(i)), float(scores[i])) for i in order if float(scores[i]) >= threshold
    )


def detect(
    outputs: Sequence[np.ndarray],
    specs: Sequence[TensorSpec],
    labels: Mapping[int, str],
    threshold: float = 0.5,
    top_k: int = 25,
) -> tuple[Detection, ...]:
    """SSD postprocess output: boxes [1,N,4], classes [1,N], scores [1,N], count [1]."""
    real = [dequantize(np.asarray(o), s) for o, s in zip(outputs, specs)]
    boxes = next(r for r in real if r.ndim == 3)[0]
    count_arr = next(r for r in real if r.ndim == 1)
    pair = [r[0] for r in real if r.ndim == 2]
    # classes are whole numbers, scores lie in [0, 1]; TF1 and TF2 exporters order them differently.
    if np.allclose(pair[0], np.round(pair[0])) and not np.allclose(pair[1], np.round(pair[1])):
        classes, scores = pair
    elif np.allclose(pair[1], np.round(pair[1])) and not np.allclose(pair[0], np.round(pair[0])):
        scores, classes = pair
    else:
        classes, scores = pair
    n = int(min(count_arr[0], len(scores)))
    found = [
        Detection(
            int(classes[i]),
            labels.get(int(classes[i])),
            float(scores[i]),
            (float(boxes[i][0]), float(boxes[i][1]), float(boxes[i][2]), float(boxes[i][3])),
        )
        for i in range(n)
        if scores[i] >= threshold
    ]
    found.sort(key=lambda d: d.score, reverse=True)
    return tuple(found[:top_k])


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
