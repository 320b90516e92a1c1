"""One inference: decode + preprocess -> invoke -> postprocess, each stage timed with perf_counter.

The heavy lifting is edge.preprocess / edge.postprocess / edge.runtime; this
module only strings them together and keeps the knobs commands may change
(top_k, threshold) behind a lock, because the interpreter is not thread-safe.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from edge import postprocess
from edge.errors import InputError
from edge.preprocess import Normalization, decode_image, image_layout, image_to_tensor
from edge.runtime import LoadedModel

ImageInput = Union[bytes, Path, Image.Image]


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
        img = (
            data
            if isinstance(data, Image.Image)
            else decode_image(data, max_pixels=self.max_image_pixels, name=name)
        )
        tensor = image_to_tensor(img, self.model.inputs[0], self.norm)
        return Prepared(tensor, (time.perf_counter() - t0) * 1e3, self.model)

    def infer(self, prepared: Prepared) -> Result:
        """Invoke and postprocess a prepared input."""
        with self.lock:
            if prepared.model is not self.model:  # prepared before a reload: the input spec may differ
                raise InputError("the model was reloaded while this input waited", "send it again")
            spec = self.model.inputs[0]
            interp = self.model.interpreter
            t1 = time.perf_counter()
            interp.set_tensor(spec.index, prepared.tensor)
            interp.invoke()
            # get_tensor copies, so the outputs survive the next invoke
            outs = [interp.get_tensor(o.index) for o in self.model.outputs]
            t2 = time.perf_counter()
            key, value = self._post(outs, self.settings)
            t3 = time.perf_counter()
        pre = prepared.preprocess_ms
        lat = {
            "preprocess": pre,
            "inference": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
            "total": pre + (t3 - t1) * 1e3,
        }
        return Result(self.kind, key, value, lat)

    def run(self, data: ImageInput, name: str = "") -> Result:
        return self.infer(self.prepare(data, name))

    def _post(self, outs: list[np.ndarray], s: Settings) -> tuple[str, Any]:
        specs = self.model.outputs
        if self.kind == postprocess.CLASSIFIER:
            top = postprocess.classify(outs[0], specs[0], self.labels, s.top_k, s.threshold)
            return "top_k", [c.as_dict() for c in top]
        if self.kind == postprocess.DETECTOR:
            found = postprocess.detect(outs, specs, self.labels, s.threshold, s.top_k)
            return "detections", [d.as_dict() for d in found]
        return "outputs", postprocess.generic(outs, specs, s.max_output_values)
