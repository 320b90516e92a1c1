"""One inference: decode + preprocess -> invoke -> postprocess, each stage timed with perf_counter.

The heavy lifting is edge.inference.preprocess / edge.inference.postprocess / edge.model.runtime; this
module only strings them together. The three stages are separate calls so the
agent can run them on three threads (prepare the next input, invoke this one,
finish the previous one): only ``invoke`` touches the interpreter, which is not
thread-safe, and only it holds the lock.

The task (classifier, detector, pose, segmentation, embedding, generic) is chosen once, from the
model's outputs (``edge.inference.tasks.select``) or ``task=``; so is the resize mode: letterbox for
raw YOLO heads (how they are trained), stretch otherwise, unless ``resize=`` says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from edge.errors import EdgeError, InputError
from edge.inference import postprocess
from edge.inference.postprocess import Settings
from edge.inference.preprocess import RESAMPLE, Normalization, decode_image, image_layout, image_to_tensor
from edge.inference.tasks import select
from edge.inference.tasks.geometry import RESIZE_MODES, Geometry
from edge.model.runtime import LoadedModel

# An EdgeError: the source refused the input itself; prepare() raises it, so it is reported in order.
ImageInput = Union[bytes, Path, Image.Image, EdgeError]
RESIZE_CHOICES = ("auto", *RESIZE_MODES)
_LETTERBOXED = ("yolo_v8", "yolo_v5", "yolo_pose", "yolo_seg")  # trained on letterboxed images

__all__ = ["Invoked", "Pipeline", "Prepared", "RESIZE_CHOICES", "Result", "Settings"]


@dataclass(frozen=True)
class Result:
    kind: str  # the task: classifier / detector / pose / segmentation / embedding / generic
    result_key: (
        str  # the main result key: top_k / detections / keypoints / poses / segments / embedding / outputs
    )
    result: Any  # its value (JSON-able)
    latency_ms: dict[str, float]  # preprocess, inference, postprocess, total
    fields: dict[str, Any] | None = None  # every result key of the message (e.g. detections + counts)
    mask_png: bytes | None = None  # segmentation mask, when asked for


@dataclass(frozen=True)
class Prepared:
    tensor: np.ndarray
    preprocess_ms: float
    model: LoadedModel  # the model whose input spec shaped the tensor
    geometry: Geometry | None = None  # where the original image sits in the input
    image: Image.Image | None = None  # the decoded picture before resizing, when asked for (thumbnails)


@dataclass(frozen=True)
class Invoked:
    """The interpreter's outputs for one input (copies: they survive the next invoke)."""

    outputs: tuple[np.ndarray, ...]
    preprocess_ms: float
    inference_ms: float
    geometry: Geometry | None = None
    image: Image.Image | None = None  # Prepared.image, passed on


def _model_metadata(model: LoadedModel) -> dict[str, Any] | None:
    """Ultralytics' metadata zip, appended at the end of the file (read the tail only)."""
    try:
        with open(model.path, "rb") as f:
            f.seek(max(0, model.size_bytes - (1 << 16)))
            return select.ultralytics_metadata(f.read())
    except OSError:
        return None


class Pipeline:
    def __init__(
        self,
        model: LoadedModel,
        labels: dict[int, str],
        norm: Normalization,
        settings: Settings,
        max_image_pixels: int = 40_000_000,
        *,
        task: str = "auto",
        resize: str = "auto",
    ) -> None:
        self.model = model
        self.norm = norm
        self.settings = settings
        self.max_image_pixels = max_image_pixels
        self.lock = threading.Lock()
        if len(model.inputs) != 1:
            raise InputError(
                f"{model.path.name} has {len(model.inputs)} inputs; the agent feeds one image",
                "use a single-input image model",
            )
        if resize not in RESIZE_CHOICES:
            raise InputError(
                f"--resize must be one of {', '.join(RESIZE_CHOICES)}; received {resize!r}",
                "auto letterboxes YOLO models and stretches the others",
            )
        self.layout = image_layout(model.inputs[0])  # fail at start-up, not on the first image
        meta = _model_metadata(model)
        self.labels = labels or select.metadata_labels(meta)
        self.choice = select.choose(
            model.outputs,
            task,
            custom_ops=model.info.custom_ops,
            num_labels=len(self.labels) or None,
            input_hw=(self.layout.height, self.layout.width),
            metadata=meta,
        )
        self.kind = self.choice.task
        self.resize = (
            resize
            if resize != "auto"
            else ("letterbox" if self.choice.decoder in _LETTERBOXED else "stretch")
        )

    def describe(self) -> dict[str, Any]:
        """What the status message says about the task and the preprocessing."""
        return {
            "task": self.choice.as_dict(),
            "preprocess": {
                "resize": self.resize,
                "resample": self.norm.resample,
                "mean": self.norm.mean,
                "std": self.norm.std,
                "channels": "RGB" if self.layout.channels == 3 else "L",
                "input": [self.layout.height, self.layout.width],
            },
        }

    def prepare(self, data: ImageInput, name: str = "", *, keep_image: bool = False) -> Prepared:
        """Decode and preprocess (no interpreter involved): may run on another thread, ahead of invoke.
        ``keep_image``: the result holds on to the decoded picture (the agent's thumbnails)."""
        t0 = time.perf_counter()
        if isinstance(data, EdgeError):
            raise data  # a source's refusal (e.g. a symlink out of its directory): reported in order
        img = (
            data
            if isinstance(data, Image.Image)
            else decode_image(
                data,
                max_pixels=self.max_image_pixels,
                name=name,
                fit=(self.layout.width, self.layout.height),
                mode="L" if self.layout.channels == 1 else "RGB",
            )
        )
        geometry = Geometry.plan(img.size, (self.layout.width, self.layout.height), self.resize)
        original = img if keep_image else None
        if self.resize == "letterbox":
            mode = "L" if self.layout.channels == 1 else "RGB"
            img = geometry.apply(img if img.mode == mode else img.convert(mode), RESAMPLE[self.norm.resample])
        tensor = image_to_tensor(img, self.model.inputs[0], self.norm)
        return Prepared(tensor, (time.perf_counter() - t0) * 1e3, self.model, geometry, original)

    def invoke(self, prepared: Prepared) -> Invoked:
        """Feed a prepared input to the interpreter and copy its outputs out."""
        with self.lock:
            if prepared.model is not self.model:  # prepared before a reload: the input spec may differ
                raise InputError("the model was reloaded while this input waited", "send it again")
            spec = self.model.inputs[0]
            interp = self.model.interpreter
            t1 = time.perf_counter()
            interp.set_tensor(spec.index, prepared.tensor)
            interp.invoke()
            # get_tensor copies, so the outputs survive the next invoke
            outs = tuple(interp.get_tensor(o.index) for o in self.model.outputs)
            t2 = time.perf_counter()
        return Invoked(outs, prepared.preprocess_ms, (t2 - t1) * 1e3, prepared.geometry, prepared.image)

    def finish(self, invoked: Invoked) -> Result:
        """Postprocess outputs (no interpreter involved): may run on another thread, behind invoke."""
        t2 = time.perf_counter()
        decoded = self._post(invoked.outputs, self.settings, invoked.geometry)
        post = (time.perf_counter() - t2) * 1e3
        lat = {
            "preprocess": invoked.preprocess_ms,
            "inference": invoked.inference_ms,
            "postprocess": post,
            "total": invoked.preprocess_ms + invoked.inference_ms + post,
        }
        return Result(
            self.kind,
            decoded.primary,
            decoded.fields[decoded.primary],
            lat,
            decoded.fields,
            decoded.mask_png,
        )

    def infer(self, prepared: Prepared) -> Result:
        """Invoke and postprocess a prepared input."""
        return self.finish(self.invoke(prepared))

    def run(self, data: ImageInput, name: str = "") -> Result:
        return self.infer(self.prepare(data, name))

    def _post(
        self, outs: Sequence[np.ndarray], s: Settings, geometry: Geometry | None = None
    ) -> postprocess.Decoded:
        return postprocess.decode(self.choice, outs, self.model.outputs, self.labels, s, geometry)
