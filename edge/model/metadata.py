"""What edge-convert embeds in a .tflite for the device: class labels and the input normalization.

It travels as one entry of the model's own ``metadata`` list (name :data:`METADATA_NAME`, the buffer holds
UTF-8 JSON), so a model file alone is enough to publish label names and to feed correctly normalized
inputs. Read here with the pure-Python flatbuffer reader: no TensorFlow or tflite-support on the device.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.model.tflite_file import TFLiteFormatError, _Reader

METADATA_NAME = "edge_ml_toolkit"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelMetadata:
    labels: dict[int, str]  # class index -> name (empty: none embedded)
    input_mean: float | None  # float = (pixel - mean) / std; None when the converter did not know it
    input_std: float | None
    input_layout: str | None  # "NHWC" for image models: how the device must feed pixels
    raw: dict[str, Any]


def _entry(data: bytes, name: str) -> bytes | None:
    """The bytes of metadata entry ``name`` (Model.metadata -> Metadata{name, buffer} -> Model.buffers)."""
    r = _Reader(data)
    root = r.indirect(0)
    for m in r.tables(root, 6):
        if r.string(m, 0) != name:
            continue
        index = int(r.scalar(m, 1, "u32"))
        buffers = r.tables(root, 4)
        if index >= len(buffers):
            raise TFLiteFormatError(f"metadata {name!r} points at buffer {index} of {len(buffers)}")
        start, length = r.vector(buffers[index], 0, 1)
        if length:
            return bytes(data[start : start + length])
        # Buffers of models over 2 GB sit after the flatbuffer: Buffer.offset (field 1) and size (field 2).
        off_pos, size_pos = r.field(buffers[index], 1), r.field(buffers[index], 2)
        if off_pos and size_pos:
            off, size = r.i64(off_pos), r.i64(size_pos)
            r._need(off, size)
            return bytes(data[off : off + size])
        return b""
    return None


def parse(data: bytes) -> ModelMetadata | None:
    """The embedded metadata of a .tflite given as bytes; None when it has none."""
    blob = _entry(data, METADATA_NAME)
    if blob is None:
        return None
    try:
        raw = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TFLiteFormatError(f"metadata {METADATA_NAME!r} is not UTF-8 JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise TFLiteFormatError(f"metadata {METADATA_NAME!r} is {type(raw).__name__}, expected an object")
    labels = raw.get("labels") or []
    inp = raw.get("input") or {}
    mean, std = inp.get("mean"), inp.get("std")
    return ModelMetadata(
        labels={i: str(v) for i, v in enumerate(labels)},
        input_mean=None if mean is None else float(mean),
        input_std=None if std is None else float(std),
        input_layout=inp.get("layout"),
        raw=raw,
    )


def read(path: str | Path) -> ModelMetadata | None:
    """The embedded metadata of the .tflite at ``path``; None when it has none.

    The file is mapped, not read: only the pages of the flatbuffer's tables and of the metadata entry are
    touched, and no model-sized buffer is allocated (glibc would keep one, raising the agent's RSS by the
    model's size for good).
    """
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return parse(b"")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return parse(data)  # type: ignore[arg-type]  # a read-only buffer: what parse() slices


@dataclass(frozen=True)
class Resolved:
    """Labels and normalization a tool uses: its flags/config first, else what the model carries."""

    labels: dict[int, str]
    mean: float | None
    std: float | None
    labels_from: str  # "flag", "model" or "none"
    normalization_from: str  # "flag", "model" or "none"
    warnings: tuple[str, ...]


def resolve(
    model: str | Path | bytes,
    *,
    labels: dict[int, str] | None = None,
    mean: float | None = None,
    std: float | None = None,
    classes: int | None = None,
) -> Resolved:
    """Fill what no flag gave from the model's embedded metadata, and check labels against ``classes``.

    Raises :class:`edge.errors.InputError` when the labels name fewer classes than the model outputs
    (predictions would carry ``"label": null``); more names than classes is only a warning.
    """
    from edge.errors import InputError

    notes: list[str] = []
    try:
        meta = parse(model) if isinstance(model, bytes) else read(model)
    except TFLiteFormatError as exc:  # a damaged entry must not stop a model that runs
        meta = None
        notes.append(f"ignored the model's embedded metadata: {exc}")
    labels_from = "flag" if labels else "none"
    if not labels and meta is not None and meta.labels:
        labels, labels_from = dict(meta.labels), "model"
    norm_from = "flag" if mean is not None or std is not None else "none"
    if (
        norm_from == "none"
        and meta is not None
        and meta.input_mean is not None
        and meta.input_std is not None
    ):
        mean, std, norm_from = meta.input_mean, meta.input_std, "model"
    labels = labels or {}
    if labels and classes:
        named = sum(1 for i in range(classes) if i in labels)
        source = "the model's embedded labels" if labels_from == "model" else "the labels file"
        if named < classes:
            raise InputError(
                f"{source} names {named} of the model's {classes} classes ({len(labels)} labels given)",
                "pass the labels file made for this model (one name a line, line N = class N)",
            )
        if len(labels) > classes:
            notes.append(
                f"{source} has {len(labels)} labels, the model {classes} classes: the rest are unused"
            )
    return Resolved(labels, mean, std, labels_from, norm_from, tuple(notes))


def classifier_classes(output_shapes: Sequence[Sequence[int]]) -> int | None:
    """K for a model with one (1, K) output, K > 1; None for detectors and other outputs."""
    if len(output_shapes) != 1:
        return None
    shape = tuple(output_shapes[0])
    return int(shape[-1]) if len(shape) == 2 and shape[-1] > 1 else None
