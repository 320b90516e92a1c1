"""Keras/SavedModel -> .tflite bytes in one of the quantization modes."""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from converter import _tf
from converter.errors import ConvertError
from converter.progress import iterate

MODES = ("int8", "int16x8", "float16", "dynamic", "none")
# Modes whose TFLite kernels abort the process on some models (int16x8 + LayerNormalization: ai-edge-litert
# aborts on the first invoke): converted and first run in a child Python (converter.isolate).
ISOLATED_MODES = ("int16x8",)
IO_DTYPES = ("int8", "uint8")
NEEDS_CALIBRATION = ("int8", "int16x8")


def io_dtypes(mode: str, io_dtype: str) -> tuple[str, str]:
    return (io_dtype, io_dtype) if mode == "int8" else ("float32", "float32")


def _converter(model: Any, flavor: str, saved_model_dir: Path | None, batch1: bool) -> Any:
    tf = _tf.tf()
    if flavor in ("tf_keras", "onnx"):  # onnx2tf hands over a tf-keras model
        if batch1:
            # The Edge TPU needs static shapes: trace the model for exactly one sample.
            inp = model.inputs[0]
            spec = tf.TensorSpec([1, *inp.shape[1:]], inp.dtype, name=inp.name.split(":")[0])
            fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
            return tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
        return tf.lite.TFLiteConverter.from_keras_model(model)
    if flavor == "tf":
        assert saved_model_dir is not None
        return tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    # Keras 3: its own exporter writes a SavedModel the TFLite converter understands.
    tmp = Path(tempfile.mkdtemp(prefix="edge-convert-"))
    model.export(str(tmp / "saved"), verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(str(tmp / "saved"))


def export_saved_model(model: Any, *, flavor: str, batch1: bool, dest: Path) -> None:
    """Write ``model`` as the SavedModel the TFLite converter reads, so a child Python can convert it.

    For tf-keras this is what ``TFLiteConverter.from_keras_model`` itself writes first (or, for the Edge TPU,
    the one-sample concrete function), so the child converts the same graph the in-process path would.
    """
    tf = _tf.tf()
    if flavor == "keras3":
        model.export(str(dest), verbose=False)
    elif batch1:
        inp = model.inputs[0]
        spec = tf.TensorSpec([1, *inp.shape[1:]], inp.dtype, name=inp.name.split(":")[0])
        fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
        tf.saved_model.save(model, str(dest), signatures=fn)
    else:
        tf.saved_model.save(model, str(dest), options=tf.saved_model.SaveOptions(save_debug_info=True))


def _convert_isolated(
    saved_model_dir: Path,
    mode: str,
    io_dtype: str,
    calibration: np.ndarray | None,
    metadata: dict[str, bytes] | None,
) -> tuple[bytes, dict[str, Any]]:
    from converter import isolate

    with tempfile.TemporaryDirectory(prefix="edge-convert-child-") as d:
        calib = None
        if calibration is not None and mode in NEEDS_CALIBRATION:
            calib = str(Path(d) / "calibration.npy")
            np.save(calib, calibration.astype(np.float32))
        result = isolate.run(
            {
                "kind": "convert",
                "saved_model": str(saved_model_dir),
                "mode": mode,
                "io_dtype": io_dtype,
                "calibration": calib,
                "metadata": {k: v.hex() for k, v in (metadata or {}).items()},
                "output": str(Path(d) / "model.tflite"),
            },
            f"the TFLite converter in mode {mode}",
            "try another --quantize mode (float16 or none keep every op in float)",
        )
        return (Path(d) / "model.tflite").read_bytes(), result["record"]


def convert(
    model: Any,
    *,
    flavor: str,
    mode: str,
    io_dtype: str = "int8",
    calibration: np.ndarray | None = None,
    saved_model_dir: Path | None = None,
    progress: bool = True,
    label: str = "calibration",
    batch1: bool = False,
    metadata: dict[str, bytes] | None = None,
    isolate: bool = False,
) -> tuple[bytes, dict[str, Any]]:
    """Return the .tflite bytes and a step record ``{name, seconds, mode, ...}``.

    With ``isolate``, ``saved_model_dir`` (see :func:`export_saved_model`) is converted in a child Python.
    """
    if mode not in MODES:
        raise ConvertError(
            f"--quantize must be one of {', '.join(MODES)}; received {mode!r}", "pick one of them"
        )
    if io_dtype not in IO_DTYPES:
        raise ConvertError(
            f"--io-dtype must be one of {', '.join(IO_DTYPES)}; received {io_dtype!r}", "pick one of them"
        )
    if mode in NEEDS_CALIBRATION and (calibration is None or len(calibration) == 0):
        raise ConvertError(
            f"--quantize {mode} calibrates activation ranges on sample inputs, and no --data was given",
            "pass --data (an .npz/.npy or image folder of typical inputs), or use --quantize float16",
        )
    started = time.perf_counter()
    if isolate:
        assert saved_model_dir is not None
        data, rec = _convert_isolated(saved_model_dir, mode, io_dtype, calibration, metadata)
        return data, {**rec, "seconds": round(time.perf_counter() - started, 3), "isolated": True}
    tf = _tf.tf()
    conv = _converter(model, flavor, saved_model_dir, batch1)
    if mode != "none":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if mode in NEEDS_CALIBRATION:
        assert calibration is not None
        samples = calibration.astype(np.float32)

        def representative() -> Any:
            for s in iterate(samples, label, len(samples), progress):
                yield [s[None, ...]]

        conv.representative_dataset = representative
    if mode == "int8":
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8 if io_dtype == "int8" else tf.uint8
        conv.inference_output_type = conv.inference_input_type
    elif mode == "int16x8":
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    try:
        with warnings.catch_warnings():
            # "Statistics for quantized inputs were expected": int8 I/O needs none, the warning only confuses.
            warnings.simplefilter("ignore", UserWarning)
            data = conv.convert()
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise ConvertError(
            f"the TFLite converter rejected the model in mode {mode}: "
            f"{first[0] if first else type(exc).__name__}",
            "try --quantize float16 or none; ops without an int8 kernel cannot be fully quantized",
        ) from exc
    saved = 0
    if mode in NEEDS_CALIBRATION or mode == "dynamic" or metadata:
        from converter.shrink import share_quantization_vectors

        size = len(data)
        data = share_quantization_vectors(data, metadata)
        added = sum(len(v) for v in (metadata or {}).values())
        saved = max(0, size + added - len(data)) if mode in NEEDS_CALIBRATION or mode == "dynamic" else 0
    in_dt, out_dt = io_dtypes(mode, io_dtype)
    return data, {
        "name": "quantize",
        "seconds": round(time.perf_counter() - started, 3),
        "mode": mode,
        "input_dtype": in_dt,
        "output_dtype": out_dt,
        "shared_quantization_bytes_saved": saved,
        "calibration_samples": int(len(calibration))
        if mode in NEEDS_CALIBRATION and calibration is not None
        else 0,
    }
