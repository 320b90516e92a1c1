"""Load the user's model (.h5, .keras, SavedModel folder) and say clearly why one cannot be used."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from converter import _tf
from converter.errors import ConvertError

FORMATS = ("h5", "keras", "savedmodel", "onnx")
_SAVE_HINT = (
    "save it with model.save('model.h5') / model.save('model.keras') or tf.saved_model.save(model, 'folder')"
)


@dataclass(frozen=True)
class SourceModel:
    """A loaded model plus what the report says about the input."""

    path: Path
    format: str  # one of FORMATS
    flavor: str  # "tf_keras", "keras3" or "tf" (a plain SavedModel without Keras metadata)
    model: Any  # tf-keras / Keras 3 model, or the loaded SavedModel object
    parameters: int | None
    size_bytes: int
    input_shape: tuple[int | None, ...]
    input_dtype: str
    predict: Callable[[np.ndarray], np.ndarray]
    layout: str | None = None  # how the device feeds the .tflite input: "NHWC" for images
    source_layout: str | None = None  # the input layout of the file given (ONNX: often NCHW)
    load_steps: tuple[dict[str, Any], ...] = ()  # work done to load it (a Keras 3 rebuild), for the report

    @property
    def is_tf_keras(self) -> bool:
        return self.flavor == "tf_keras"

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "flavor": self.flavor,
            "parameters": self.parameters,
            "size_bytes": self.size_bytes,
            "input_shape": list(self.input_shape),
            "input_dtype": self.input_dtype,
            "layout": self.source_layout or self.layout,
        }


def image_layout(shape: tuple[Any, ...]) -> str | None:
    """TensorFlow/TFLite image inputs are channels-last; other ranks carry no image layout."""
    return "NHWC" if len(shape) == 4 else None


def detect_format(path: Path) -> str:
    if not path.exists():
        raise ConvertError(
            f"model not found: {path}", f"check the path (relative paths start at {Path.cwd()})"
        )
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "savedmodel"
        raise ConvertError(
            f"{path} is a folder without saved_model.pb, so it is not a SavedModel",
            f"pass the SavedModel folder itself, or a .h5/.keras file; {_SAVE_HINT}",
        )
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return "h5"
    if suffix == ".keras":
        return "keras"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".tflite":
        raise ConvertError(
            f"{path} is already a .tflite model; edge-convert needs the Keras model it came from",
            "pass the .h5/.keras/SavedModel you trained (edge-bench/edge-agent run .tflite files)",
        )
    raise ConvertError(
        f"unsupported model file {path.name!r}: expected .h5, .keras, .onnx or a SavedModel folder",
        _SAVE_HINT,
    )


def _size(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _keras_version(path: Path, fmt: str) -> str | None:
    """The Keras version that saved the file, read without TensorFlow (None when unknown)."""
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read("metadata.json"))
            return str(meta.get("keras_version", "")) or None
        if fmt == "h5":
            import h5py

            with h5py.File(path, "r") as f:
                v = f.attrs.get("keras_version")
            return v.decode() if isinstance(v, bytes) else (str(v) if v is not None else None)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ConvertError(
            f"{path} is not a Keras model file ({type(exc).__name__}: {exc})", _SAVE_HINT
        ) from exc
    return None


def _from_keras(path: Path, fmt: str, flavor: str, model: Any) -> SourceModel:
    shape = tuple(model.inputs[0].shape) if model.inputs else ()
    dtype = model.inputs[0].dtype
    dtype_name = getattr(dtype, "name", str(dtype))
    if len(model.inputs) != 1:
        raise ConvertError(
            f"{path} has {len(model.inputs)} inputs; edge-convert handles single-input models",
            "export a single-input model (wrap preprocessing into the model)",
        )

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x, verbose=0, batch_size=64))

    return SourceModel(
        path=path,
        format=fmt,
        flavor=flavor,
        model=model,
        parameters=int(model.count_params()),
        size_bytes=_size(path),
        input_shape=tuple(None if d is None else int(d) for d in shape),
        input_dtype=str(dtype_name),
        predict=predict,
        layout=image_layout(shape),
    )


def load(path: str | Path, *, needs_tf_keras: bool = False) -> SourceModel:
    """Load a model file or folder; ``needs_tf_keras`` when pruning/QAT will rewrite it with tfmot."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "onnx":
        if needs_tf_keras:
            raise ConvertError(
                f"{path} is an ONNX model; pruning and QAT (tensorflow-model-optimization) need a tf-keras model",
                "prune/QAT in the training framework before export (e.g. torch.ao.pruning / torch.ao.quantization), "
                "or drop --prune/--qat: post-training int8, int16x8 and float16 work on ONNX",
            )
        from converter import onnx_input

        return onnx_input.load(path)
    version = _keras_version(path, fmt) if fmt != "savedmodel" else None
    keras3 = version is not None and version.split(".")[0] == "3"
    tf = _tf.tf()
    if fmt == "savedmodel":
        if (path / "keras_metadata.pb").exists():
            keras = _tf.keras()
            try:
                model = keras.models.load_model(path, compile=False)
            except Exception as exc:
                raise ConvertError(
                    f"cannot load the Keras SavedModel {path}: {type(exc).__name__}: {exc}", _SAVE_HINT
                ) from exc
            return _from_keras(path, fmt, "tf_keras", model)
        if needs_tf_keras:
            raise ConvertError(
                f"{path} is a plain SavedModel (no Keras metadata); pruning and QAT need a tf-keras model",
                "pass the tf-keras model (.h5/.keras), or drop --prune/--qat",
            )
        try:
            loaded = tf.saved_model.load(str(path))
            fn = loaded.signatures["serving_default"]
        except Exception as exc:
            raise ConvertError(
                f"cannot load the SavedModel {path}: {type(exc).__name__}: {exc}",
                "re-export it with tf.saved_model.save(model, folder)",
            ) from exc
        specs = list(fn.structured_input_signature[1].values())
        if len(specs) != 1:
            raise ConvertError(
                f"{path} has {len(specs)} inputs; edge-convert handles single-input models",
                "export a single-input signature",
            )
        in_name = list(fn.structured_input_signature[1].keys())[0]
        spec = specs[0]

        def predict(x: np.ndarray) -> np.ndarray:
            outs = [
                list(fn(**{in_name: tf.constant(x[i : i + 64], dtype=spec.dtype)}).values())[0].numpy()
                for i in range(0, len(x), 64)
            ]
            return np.concatenate(outs)

        return SourceModel(
            path=path,
            format=fmt,
            flavor="tf",
            model=loaded,
            parameters=None,
            size_bytes=_size(path),
            input_shape=tuple(None if d is None else int(d) for d in spec.shape),
            input_dtype=spec.dtype.name,
            predict=predict,
            layout=image_layout(tuple(spec.shape)),
        )
    try:
        if keras3:
            import keras as keras3_module

            model = keras3_module.models.load_model(path, compile=False)
        else:
            model = _tf.keras().models.load_model(path, compile=False)
    except Exception as exc:
        msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        fix = _SAVE_HINT
        if "Unknown layer" in msg or "custom" in msg.lower():
            fix = (
                "the model uses a custom layer: call converter.convert(model_object, ...) from Python with the "
                "model already built, or register it with keras.saving.register_keras_serializable"
            )
        raise ConvertError(
            f"{path} is not a loadable Keras model ({type(exc).__name__}: {msg})", fix
        ) from exc
    if keras3 and needs_tf_keras:
        from converter import keras3 as keras3_rebuild

        original = _from_keras(path, fmt, "keras3", model)
        rebuilt, record = keras3_rebuild.rebuild(model)
        # The rebuilt tf-keras model is what gets pruned/QAT-trained; the Keras 3 model stays the reference.
        return replace(
            _from_keras(path, fmt, "tf_keras", rebuilt),
            predict=original.predict,
            load_steps=({**record, "keras_version": version},),
        )
    return _from_keras(path, fmt, "keras3" if keras3 else "tf_keras", model)


def from_object(model: Any, path: Path) -> SourceModel:
    """Wrap a model object handed to the Python API (notebooks)."""
    keras = _tf.keras()
    if not isinstance(model, keras.Model):
        raise ConvertError(
            f"expected a tf-keras Model object; received {type(model).__module__}.{type(model).__name__}",
            "pass a tf_keras model, or a path to .h5/.keras/SavedModel",
        )
    return _from_keras(path, "keras", "tf_keras", model)
