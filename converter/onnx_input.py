"""ONNX models (e.g. exported from PyTorch) -> a tf-keras model through onnx2tf, then the usual paths.

onnx2tf rewrites NCHW graphs as NHWC, which is what TFLite kernels and the device want: the report says
which layout the .tflite takes. The float reference for accuracy and agreement is the ONNX model itself,
run by onnxruntime, so the figures also cover onnx2tf's rewrite. Pruning and QAT are Keras-only.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import ConvertError
from converter.inputs import SourceModel

_INSTALL = "pip install 'edge-ml-toolkit[onnx]' (onnx, onnxruntime, onnx2tf)"
# onnx2tf checks its conversion on 20 sample images it downloads unless this file is in the working folder;
# nothing may be downloaded, so it gets sample inputs of the model's own shape from us.
_ONNX2TF_SAMPLES = "calibration_image_sample_data_20x128x128x3_float32.npy"


def _dims(value_info: Any) -> tuple[int | None, ...]:
    return tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in value_info.type.tensor_type.shape.dim
    )


def source_layout(shape: tuple[int | None, ...]) -> str | None:
    """NCHW when the channel axis (1 or 3 channels) sits after the batch, NHWC when last."""
    if len(shape) != 4:
        return None
    if shape[1] in (1, 3) and shape[3] not in (1, 3):
        return "NCHW"
    if shape[3] in (1, 3):
        return "NHWC"
    return None


def to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def load(path: Path) -> SourceModel:
    try:
        import onnx
    except ImportError as exc:
        raise ConvertError(
            f"{path} is an ONNX model and the onnx package is not installed", _INSTALL
        ) from exc
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ConvertError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})",
            "export it again, e.g. torch.onnx.export(model, sample, 'model.onnx')",
        ) from exc
    initializers = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(graph_inputs) != 1:
        raise ConvertError(
            f"{path} has {len(graph_inputs)} inputs; edge-convert handles single-input models",
            "export a single-input model",
        )
    in_name = graph_inputs[0].name
    onnx_shape = _dims(graph_inputs[0])
    layout = source_layout(onnx_shape)
    try:
        import onnx2tf
        import onnxruntime
    except ImportError as exc:
        raise ConvertError(f"converting ONNX needs onnx2tf and onnxruntime: {exc}", _INSTALL) from exc

    keras_model = _onnx2tf(onnx2tf, path, onnx_shape, layout)
    shape = tuple(keras_model.inputs[0].shape)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch_fixed = onnx_shape[0] is not None

    def predict(x: np.ndarray) -> np.ndarray:
        # The ONNX model itself is the float reference; it takes its own layout.
        x = np.transpose(x, (0, 3, 1, 2)) if layout == "NCHW" else x
        step = 1 if batch_fixed else 64
        outs = [
            session.run(None, {in_name: x[i : i + step].astype(np.float32)})[0]
            for i in range(0, len(x), step)
        ]
        return np.concatenate(outs)

    return SourceModel(
        path=path,
        format="onnx",
        flavor="onnx",
        model=keras_model,
        parameters=int(sum(int(np.prod(i.dims)) for i in proto.graph.initializer)),
        size_bytes=path.stat().st_size,
        input_shape=(None, *(None if d is None else int(d) for d in shape[1:])),
        input_dtype="float32",
        predict=predict,
        layout="NHWC" if len(shape) == 4 else None,
        source_layout=layout,
    )


def _onnx2tf(onnx2tf: Any, path: Path, onnx_shape: tuple[int | None, ...], layout: str | None) -> Any:
    h, w = (
        (onnx_shape[2], onnx_shape[3])
        if layout == "NCHW"
        else (onnx_shape[1:3] if len(onnx_shape) == 4 else (None, None))
    )
    work = Path(tempfile.mkdtemp(prefix="edge-convert-onnx2tf-"))
    samples = np.random.default_rng(0).random((20, h or 32, w or 32, 3), dtype=np.float32)
    np.save(work / _ONNX2TF_SAMPLES, samples)
    cwd = os.getcwd()
    log = io.StringIO()
    try:
        os.chdir(work)  # onnx2tf looks for its sample file in the working folder
        with contextlib.redirect_stdout(log):
            model = onnx2tf.convert(
                input_onnx_file_path=str(path.resolve()),
                output_folder_path=str(work / "tf"),
                non_verbose=True,
                disable_model_save=True,
                copy_onnx_input_output_names_to_tflite=True,
            )
    except (Exception, SystemExit) as exc:  # onnx2tf calls sys.exit(1) on ops it cannot convert
        tail = " ".join(log.getvalue().strip().splitlines()[-3:])[-400:]
        raise ConvertError(
            f"onnx2tf cannot convert {path}: {type(exc).__name__} {exc} {tail}".strip(),
            "simplify/re-export the model (opset 13+, static input shape), or convert it to a "
            "tf-keras model another way",
        ) from exc
    finally:
        os.chdir(cwd)
    if model is None or not getattr(model, "inputs", None):
        raise ConvertError(f"onnx2tf returned no model for {path}", "check the ONNX file with onnx.checker")
    return model
