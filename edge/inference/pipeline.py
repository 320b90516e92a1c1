"""One inference: decode + preprocess -> invoke -> postprocess, each stage timed with perf_counter.

The heavy lifting is edge.inference.preprocess / edge.inference.postprocess / edge.model.runtime; this
module only strings them together. The three stages are separate calls so the
agent can run them on three threads (prepare the next input, invoke this one,
finish the previous one): only ``invoke`` touches the interpreter, which is not
thread-safe, and only it holds the lock.
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
from edge.inference.preprocess import Normalization, decode_image, image_layout, image_to_tensor
from edge.model.runtime import LoadedModel

# An EdgeError: the source refused the input itself; prepare() raises it, so it is reported in order.
ImageInput = Union[bytes, Path, Image.Image, EdgeError]


@dataclass(frozen=True)
class Result:
    kind: str  # classifier / detector / generic
    result_key: str  # top_k / detections / outputs
    result: Any  # JSON-able
    latency_ms: dict[str, float]  # preprocess, inference, postprocess, total


@dataclass(frozen=True)
class Prepared:
    tensor: np.ndarray
    preprocess_ms: float
    model: LoadedModel  # the model whose input spec shaped the tensor


@dataclass(frozen=True)
class Invoked:
    """The interpreter's outputs for one input (copies: they survive the next invoke)."""

    outputs: tuple[np.ndarray, ...]
    preprocess_ms: float
    inference_ms: float


@dataclass
class Settings:
    """What ``set`` commands may change at run time."""

    top_k: int = 5
    threshold: float = 0.0
    max_output_values: int = 1024


class Pipeline:
    def __init__(
        self,
        model: LoadedModel,
        labels: dict[int, str],
        norm: Normalization,
        settings: Settings,
        max_image_pixels: int = 40_000_000,
    ) -> None:
        self.model = model
        self.labels = labels
        self.norm = norm
        self.settings = settings
        self.max_image_pixels = max_image_pixels
        self.kind = postprocess.model_kind(model.outputs)
        self.lock = threading.Lock()
        if len(model.inputs) != 1:
            raise InputError(
                f"{model.path.name} has {len(model.inputs)} inputs; the agent feeds one image",
                "use a single-input image model",
            )
        image_layout(model.inputs[0])  # fail at start-up, not on the first image

    def prepare(self, data: ImageInput, name: str = "") -> Prepared:
        """Decode and preprocess (no interpreter involved): may run on another thread, ahead of invoke."""
        t0 = time.perf_counter()
        if isinstance(data, EdgeError):
            raise data  # a source's refusal (e.g. a symlink out of its directory): reported in order
        spec = self.model.inputs[0]
        layout = image_layout(spec)
        img = (
            data
            if isinstance(data, Image.Image)
            else decode_image(
                data,
                max_pixels=self.max_image_pixels,
                name=name,
                fit=(layout.width, layout.height),
                mode="L" if layout.channels == 1 else "RGB",
            )
        )
        tensor = image_to_tensor(img, spec, self.norm)
        return Prepared(tensor, (time.perf_counter() - t0) * 1e3, self.model)

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
        return Invoked(outs, prepared.preprocess_ms, (t2 - t1) * 1e3)

    def finish(self, invoked: Invoked) -> Result:
        """Postprocess outputs (no interpreter involved): may run on another thread, behind invoke."""
        t2 = time.perf_counter()
        key, value = self._post(invoked.outputs, self.settings)
        post = (time.perf_counter() - t2) * 1e3
        lat = {
            "preprocess": invoked.preprocess_ms,
            "inference": invoked.inference_ms,
            "postprocess": post,
            "total": invoked.preprocess_ms + invoked.inference_ms + post,
        }
        return Result(self.kind, key, value, lat)

    def infer(self, prepared: Prepared) -> Result:
        """Invoke and postprocess a prepared input."""
        return self.finish(self.invoke(prepared))

    def run(self, data: ImageInput, name: str = "") -> Result:
        return self.infer(self.prepare(data, name))

    def _post(self, outs: Sequence[np.ndarray], s: Settings) -> tuple[str, Any]:
        specs = self.model.outputs
        if self.kind == postprocess.CLASSIFIER:
            top = postprocess.classify(outs[0], specs[0], self.labels, s.top_k, s.threshold)
            return "top_k", [c.as_dict() for c in top]
        if self.kind == postprocess.DETECTOR:
            found = postprocess.detect(outs, specs, self.labels, s.threshold, s.top_k)
            return "detections", [d.as_dict() for d in found]
        return "outputs", postprocess.generic(outs, specs, s.max_output_values)
