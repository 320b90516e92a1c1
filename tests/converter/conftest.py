"""Shared, session-scoped models and data for the converter tests (trained once: a few seconds)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.support import ROOT

# tfmot needs tf-keras; must be set before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# CI exports EDGE_TFLITE_RUNTIME_PYTHON (dev.sh); elsewhere the venv ./dev.sh setup made stands in.
_LOCAL_TFLITE = ROOT / ".venv-tflite" / "bin" / "python"
if "EDGE_TFLITE_RUNTIME_PYTHON" not in os.environ and _LOCAL_TFLITE.exists():
    os.environ["EDGE_TFLITE_RUNTIME_PYTHON"] = str(_LOCAL_TFLITE)


@dataclass(frozen=True)
class Digits:
    model: Path  # tf-keras .h5 trained on the train split
    train: Path  # .npz x, y
    test: Path  # .npz x, y
    x_test: np.ndarray
    y_test: np.ndarray
    keras_test_accuracy: float


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    from converter import examples

    root = tmp_path_factory.mktemp("digits")
    info = examples.train_digits_cnn(root / "digits.h5", epochs=12)
    x_test, y_test = examples.digits("test")
    return Digits(
        model=root / "digits.h5",
        train=examples.export_npz(root / "train.npz", "train"),
        test=examples.export_npz(root / "test.npz", "test"),
        x_test=x_test,
        y_test=y_test,
        keras_test_accuracy=info["test_accuracy"],
    )


def litert_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """Independent of the converter: plain ai-edge-litert, one sample at a time, dequantized."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    res = []
    for s in x:
        s = s[None].astype(np.float32)
        scale, zp = inp["quantization"]
        if scale:
            s = np.clip(np.round(s / scale + zp), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
        it.set_tensor(inp["index"], s.astype(inp["dtype"]))
        it.invoke()
        y = it.get_tensor(out["index"]).astype(np.float32)
        oscale, ozp = out["quantization"]
        res.append((y - ozp) * oscale if oscale else y)
    return np.concatenate(res)


def weight_zero_fraction(path: Path) -> float:
    """Fraction of exact zeros in the int8 conv/dense weight tensors of a .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    zeros = total = 0
    for d in it.get_tensor_details():
        shape = d["shape"]
        if (
            d["dtype"] == np.int8
            and len(shape) >= 2
            and shape[0] > 1
            and ("MatMul" in d["name"] or "Conv2D" in d["name"])
        ):
            w = it.get_tensor(d["index"])
            zeros += int(np.count_nonzero(w == 0))
            total += w.size
    assert total > 0, "no weight tensors found"
    return zeros / total


@pytest.fixture(scope="session")
def litert():
    return litert_outputs


@pytest.fixture(scope="session")
def zero_fraction():
    return weight_zero_fraction
