"""Which task a model performs, read from its output signature (and metadata where present).

``choose`` returns the task, the decoder for it and a sentence saying why, for the status message.
``--task auto`` takes the first task the signature fits, in the order the rules below are listed; an
explicit ``--task`` takes that task's decoder, or fails saying which outputs it expected.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge.errors import InputError

CLASSIFIER, DETECTOR, POSE, SEGMENTATION, EMBEDDING, GENERIC = (
    "classifier",
    "detector",
    "pose",
    "segmentation",
    "embedding",
    "generic",
)
TASKS = (CLASSIFIER, DETECTOR, POSE, SEGMENTATION, EMBEDDING, GENERIC)
TASK_CHOICES = ("auto", *TASKS)
SSD_OP = "TFLite_Detection_PostProcess"
# Ultralytics' names for its tasks (metadata.json zipped onto the .tflite by its exporter)
_ULTRALYTICS_TASKS = {"detect": DETECTOR, "pose": POSE, "classify": CLASSIFIER, "segment": DETECTOR}
_EMBEDDING_HINTS = ("embed", "feature", "descriptor", "vector")


class OutputSpec(Protocol):
    """What choosing needs of an output tensor (edge's TensorSpec has it)."""

    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> np.dtype: ...


@dataclass(frozen=True)
class TaskChoice:
    task: str  # one of TASKS
    decoder: str  # top_k, ssd_postprocess, yolo_v8, yolo_v5, movenet_single, movenet_multi, posenet,
    #               yolo_pose, class_map, class_scores, embedding, generic
    reason: str
    requested: str = "auto"

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "decoder": self.decoder,
            "reason": self.reason,
            "requested": self.requested,
        }


def ultralytics_metadata(data: bytes, max_bytes: int = 1 << 20) -> dict[str, Any] | None:
    """The ``metadata.json`` Ultralytics appends to its .tflite exports as a zip, or None."""
    tail = data[-(1 << 16) :]
    # a zip's central directory (at its end) names its files in plain text; TFLite metadata zips hold
    # other files (labels.txt), which are not this
    if b"PK\x05\x06" not in tail or b"metadata.json" not in tail:
        return None
    # only now: zipfile pulls in shutil and more, which the agent does not otherwise need
    import ast
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = [i for i in zf.infolist() if i.filename == "metadata.json" and i.file_size <= max_bytes]
            if not infos:
                return None
            text = zf.read(infos[0]).decode("utf-8")
        try:
            meta = json.loads(text)
        except ValueError:  # older exports wrote a Python dict literal
            meta = ast.literal_eval(text)
    except (zipfile.BadZipFile, UnicodeDecodeError, ValueError, SyntaxError, KeyError, OSError):
        return None
    return meta if isinstance(meta, dict) else None


def metadata_labels(meta: Mapping[str, Any] | None) -> dict[int, str]:
    """Ultralytics' ``names`` ({"0": "person", ...} or a list) as {index: label}."""
    names = (meta or {}).get("names")
    if isinstance(names, dict):
        return {int(k): str(v) for k, v in names.items() if str(k).lstrip("-").isdigit()}
    if isinstance(names, list):
        return {i: str(v) for i, v in enumerate(names)}
    return {}


def _spatial(shape: tuple[int, ...], input_hw: tuple[int, int] | None) -> bool:
    """A map with (at least) 1/8 of the input's resolution per side: per-pixel output, not features."""
    h, w = shape[1], shape[2]
    if input_hw is None:
        return min(h, w) >= 32
    return h * 8 >= input_hw[0] and w * 8 >= input_hw[1] and min(h, w) >= 8


def posenet_outputs(shapes: Sequence[Sequence[int]]) -> tuple[int, int] | None:
    """(heatmaps, offsets) output positions of a PoseNet model: [1,H,W,17] and [1,H,W,34] among its 2 or 4
    outputs (the other two: displacements), in whatever order the converter listed them."""
    if len(shapes) not in (2, 4) or any(len(x) != 4 for x in shapes):
        return None
    heat = [i for i, x in enumerate(shapes) if x[-1] == 17]
    off = [i for i, x in enumerate(shapes) if x[-1] == 34]
    if len(heat) != 1 or len(off) != 1 or tuple(shapes[heat[0]][:3]) != tuple(shapes[off[0]][:3]):
        return None
    return heat[0], off[0]


def _yolo_seg(shapes: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...], tuple[int, ...], int, int] | None:
    """(head, prototypes, M, classes) for a YOLO segmentation model's two outputs: a head [1, 4+C+M, N]
    (or [1, N, 5+C+M]) and M mask prototypes [1, H, W, M] (or [1, M, H, W]), in either order."""
    if len(shapes) != 2 or sorted(len(x) for x in shapes) != [3, 4]:
        return None
    head, protos = sorted(shapes, key=len)
    if head[0] != 1 or protos[0] != 1:
        return None
    m = min(protos[1:])
    if not 8 <= m <= 64 or sorted(protos[1:])[1] < 2 * m:  # a few dozen planes, each larger than M
        return None
    attrs = min(head[1:])
    classes = attrs - m - (4 if head[1] < head[2] else 5)
    if classes < 1 or max(head[1:]) < 4 * attrs:
        return None
    return head, protos, m, classes


def candidates(
    outputs: Sequence[OutputSpec],
    *,
    custom_ops: Sequence[str] = (),
    num_labels: int | None = None,
    input_hw: tuple[int, int] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, tuple[str, str]]:
    """Every task this signature fits -> (decoder, reason), the most likely first."""
    found: dict[str, tuple[str, str]] = {}

    def add(task: str, decoder: str, reason: str) -> None:
        found.setdefault(task, (decoder, reason))

    shapes: list[tuple[int, ...]] = [tuple(o.shape) for o in outputs]
    sig = ", ".join(str(list(s)) for s in shapes)
    meta_task = _ULTRALYTICS_TASKS.get(str((metadata or {}).get("task", "")))
    seg = _yolo_seg(shapes)
    if seg is not None and meta_task in (DETECTOR, None):
        head, protos, m, classes = seg
        fits = "" if num_labels in (None, classes) else f"; the labels file has {num_labels} names"
        why = (
            f"a YOLO segmentation head {list(head)} ({classes} classes, {m} mask coefficients) and "
            f"mask prototypes {list(protos)}{fits}"
        )
        if meta_task is not None:
            why = f"Ultralytics metadata says task={(metadata or {}).get('task')}; {why}"
        add(DETECTOR, "yolo_seg", why)
        add(SEGMENTATION, "yolo_seg", why)
    if meta_task and len(shapes) >= 1 and len(shapes[0]) == 3:
        head = shapes[0]
        if meta_task == POSE:
            add(POSE, "yolo_pose", f"Ultralytics metadata says task=pose; head {list(head)}")
        elif meta_task == DETECTOR:
            layout = "yolo_v8" if head[1] < head[2] else "yolo_v5"
            extra = (
                " (masks not decoded: boxes only)" if metadata and metadata.get("task") == "segment" else ""
            )
            add(
                DETECTOR,
                layout,
                f"Ultralytics metadata says task={metadata.get('task') if metadata else ''}; "
                f"head {list(head)}{extra}",
            )
    if SSD_OP in custom_ops or (
        len(shapes) == 4
        and sorted(len(s) for s in shapes) == [1, 2, 2, 3]
        and any(t[-1] == 4 for t in shapes if len(t) == 3)
    ):
        why = (
            f"the model has the {SSD_OP} op"
            if SSD_OP in custom_ops
            else "boxes, classes, scores, count outputs"
        )
        add(DETECTOR, "ssd_postprocess", f"{why} ({sig})")
    if posenet_outputs(shapes) is not None:
        add(POSE, "posenet", f"PoseNet heatmaps [..,17] and offsets [..,34] ({sig})")
    if len(shapes) == 1:
        s, o = shapes[0], outputs[0]
        index_dtype = np.dtype(o.dtype) in (np.int32, np.int64)  # what an ArgMax gives
        name_hint = any(h in o.name.lower() for h in _EMBEDDING_HINTS)
        if s in ((1, 1, 17, 3), (1, 17, 3)):
            add(
                POSE,
                "movenet_single",
                f"one output {list(s)}: 17 COCO keypoints x (y, x, score), MoveNet single-pose",
            )
        if len(s) == 3 and s[0] == 1 and s[2] == 56 and s[1] <= 20:
            add(
                POSE,
                "movenet_multi",
                f"one output {list(s)}: up to {s[1]} poses x (17 keypoints, box, score), MoveNet multi-pose",
            )
        if len(s) == 3 and s[0] == 1 and index_dtype and _spatial(s, input_hw):
            add(SEGMENTATION, "class_map", f"one integer output {list(s)}: a class index per pixel")
        # Anchors far outnumber attributes (8400 vs 84); int32/int64 outputs are indices, not a head.
        head_dtype = np.dtype(o.dtype) in (np.float32, np.float16, np.int8, np.uint8)
        if len(s) == 3 and s[0] == 1 and head_dtype and min(s[1:]) >= 5 and max(s[1:]) >= 4 * min(s[1:]):
            attrs = min(s[1:])
            if attrs == 56 and num_labels != 52:
                add(
                    POSE,
                    "yolo_pose",
                    f"one output {list(s)}: box + score + 17 keypoints x (x, y, v) per "
                    "anchor, a YOLO pose head",
                )
            v8 = s[1] < s[2]
            classes = attrs - (4 if v8 else 5)
            fits = "" if num_labels in (None, classes) else f"; the labels file has {num_labels} names"
            add(
                DETECTOR,
                "yolo_v8" if v8 else "yolo_v5",
                f"one output {list(s)}: a raw YOLO{'v8/v11' if v8 else 'v5'} head, "
                f"{classes} classes x {max(s[1:])} anchors{fits}",
            )
        if len(s) == 4 and s[0] == 1 and s[3] >= 2 and _spatial(s, input_hw):
            add(SEGMENTATION, "class_scores", f"one output {list(s)}: {s[3]} class scores per pixel (argmax)")
        if (len(s) == 4 and s[:3] == (1, 1, 1)) or (name_hint and len(s) == 2):
            add(
                EMBEDDING,
                "embedding",
                f"one output {list(s)}"
                + (f" named {o.name!r}" if name_hint else ": a pooled feature vector"),
            )
        if len(s) == 1 or (len(s) == 2 and s[0] == 1):
            n = s[-1]
            fits = "" if num_labels in (None, n, n - 1) else f"; the labels file has {num_labels} names"
            add(CLASSIFIER, "top_k", f"one output {list(s)}: {n} class scores{fits}")
        add(EMBEDDING, "embedding", f"one output {list(s)} read as a vector")
    add(GENERIC, "generic", f"outputs {sig}: no task recognised; values published as they are")
    return found


def choose(
    outputs: Sequence[OutputSpec],
    requested: str = "auto",
    *,
    custom_ops: Sequence[str] = (),
    num_labels: int | None = None,
    input_hw: tuple[int, int] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> TaskChoice:
    if requested not in TASK_CHOICES:
        raise InputError(
            f"--task must be one of {', '.join(TASK_CHOICES)}; received {requested!r}",
            "use auto to read the task from the model's outputs",
        )
    fits = candidates(
        outputs, custom_ops=custom_ops, num_labels=num_labels, input_hw=input_hw, metadata=metadata
    )
    if requested == "auto":
        task = next(iter(fits))
        decoder, reason = fits[task]
        return TaskChoice(task, decoder, f"auto: {reason}")
    if requested not in fits:
        sig = ", ".join(str(list(o.shape)) for o in outputs)
        raise InputError(
            f"--task {requested} does not fit this model's outputs ({sig}); it fits: {', '.join(fits)}",
            f"{_EXPECTED[requested]}; or use --task auto",
        )
    decoder, reason = fits[requested]
    return TaskChoice(requested, decoder, f"--task {requested}: {reason}", requested)


_EXPECTED = {
    CLASSIFIER: "a classifier has one [1, N] output",
    DETECTOR: "a detector has the SSD post-process op's 4 outputs, or one raw YOLO head [1,4+C,N] / [1,N,5+C]",
    POSE: "a pose model has a MoveNet [1,1,17,3] / [1,P,56] output, PoseNet heatmaps+offsets or a YOLO pose head",
    SEGMENTATION: "a segmentation model has one [1,H,W] class map or [1,H,W,C] class scores at the input's scale",
    EMBEDDING: "an embedding model has one output (the vector)",
}
