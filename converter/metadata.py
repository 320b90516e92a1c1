"""What the device needs to know about the model besides its weights: class labels and input normalization.

Written into the .tflite (see :mod:`edge.model.metadata`, which reads it on the device) and into the report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import edge
from converter.data import NORMALIZATIONS
from converter.errors import ConvertError
from edge.errors import EdgeError
from edge.model.labels import read_labels
from edge.model.metadata import FORMAT_VERSION, METADATA_NAME


def _labels_from_file(path: str | Path) -> list[str]:
    try:
        by_index = read_labels(path)
    except EdgeError as exc:
        raise ConvertError(exc.what, exc.fix) from exc
    if not by_index:
        raise ConvertError(f"labels file {path} is empty", "write one class name a line (line N = class N)")
    missing = sorted(set(range(max(by_index) + 1)) - set(by_index))
    if missing:
        raise ConvertError(
            f"labels file {path} has no name for class {missing[0]}", "give every class index 0..K-1 a name"
        )
    return [by_index[i] for i in range(len(by_index))]


def collect(
    *,
    labels_file: str | Path | None,
    data_class_names: Sequence[str],
    model: Any,
    classes: int | None,
    normalize: str | None,
    layout: str | None,
) -> dict[str, Any]:
    """The metadata block: labels and where they came from, and the float model's input normalization."""
    labels: list[str] = []
    source = None
    if labels_file is not None:
        labels, source = _labels_from_file(labels_file), f"--labels {labels_file}"
    elif data_class_names:
        labels, source = list(data_class_names), "image folder class names"
    else:
        names = getattr(model, "class_names", None)  # set by users on the model object (tf.data convention)
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            labels, source = list(names), "model.class_names"
    if labels and classes is not None and len(labels) != classes:
        raise ConvertError(
            f"{source} gives {len(labels)} labels but the model has {classes} outputs",
            "pass a labels file with one name per model output (line N = class N)",
        )
    inp: dict[str, Any] = {"layout": layout, "normalize": normalize, "mean": None, "std": None}
    if normalize is not None:
        # pixel * scale + offset == (pixel - mean) / std, the form the agent and edge-bench take.
        scale, offset = NORMALIZATIONS[normalize]
        inp["mean"], inp["std"] = round(-offset / scale, 6), round(1.0 / scale, 6)
    return {
        "name": METADATA_NAME,
        "version": FORMAT_VERSION,
        "labels": labels,
        "labels_source": source,
        "input": inp,
    }


def entries(meta: dict[str, Any]) -> dict[str, bytes]:
    """The model metadata entries (name -> bytes) that carry ``meta`` inside the .tflite."""
    body = {
        "version": meta["version"],
        "labels": meta["labels"],
        "input": meta["input"],
        "tool": f"edge-convert {edge.__version__}",
    }
    return {METADATA_NAME: json.dumps(body, separators=(",", ":")).encode("utf-8")}
