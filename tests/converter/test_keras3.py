"""Keras 3 models: PTQ directly, prune + QAT through a tf-keras rebuild with the same weights.

Keras 3 is the ``keras`` package TensorFlow 2.21 itself depends on; tf-keras is ``tf_keras``: both are in
the host venv. The fixture model is trained the way a Keras 3 user would, in a fresh Python without
TF_USE_LEGACY_KERAS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converter.api import convert
from converter.errors import ConvertError
from converter.examples import KERAS3_TRAIN


def _keras3_model(path: Path, kind: str) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run(
        [sys.executable, "-c", KERAS3_TRAIN, str(path), kind],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return path


@pytest.fixture(scope="module")
def keras3_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _keras3_model(tmp_path_factory.mktemp("k3") / "digits3.keras", "good")


def test_keras3_model_converts_to_int8_directly(keras3_digits, digits, tmp_path, litert) -> None:
    rep = convert(keras3_digits, output=tmp_path / "m.tflite", data=digits.train, eval_data=digits.test)
    assert rep["input"]["flavor"] == "keras3" and rep["quantization"]["mode"] == "int8"
    m = rep["metrics"]
    assert m["float_accuracy"] > 0.85 and m["accuracy_drop"] <= 1.5
    t_out = litert(Path(rep["output"]["path"]), digits.x_test)
    assert m["tflite_accuracy"] == pytest.approx(float(np.mean(t_out.argmax(1) == digits.y_test)), abs=1e-4)
    assert rep["compatibility"]["ai_edge_litert"]["ok"] and rep["compatibility"]["tflite_runtime"]["ok"]


def test_keras3_accuracy_budget_search_converts_in_the_child_python(keras3_digits, digits, tmp_path) -> None:
    # Each candidate is converted from the Keras 3 model's own SavedModel export in a child Python.
    rep = convert(
        keras3_digits,
        output=tmp_path / "b.tflite",
        data=digits.train,
        eval_data=digits.test,
        max_accuracy_drop=2.0,
    )
    assert [c["name"] for c in rep["candidates"]] == [
        "int8",
        "int16x8",
        "float16",
        "float32",
    ]  # no QAT: Keras 3
    assert all(c.get("error") is None and c["size_bytes"] > 0 for c in rep["candidates"]), rep["candidates"]
    chosen = next(c for c in rep["candidates"] if c["chosen"])
    assert chosen["accuracy_drop"] <= 2.0 and rep["output"]["size_bytes"] == chosen["size_bytes"]
    step = next(s for s in rep["steps"] if s.get("candidate") == chosen["name"])
    assert step["isolated"]


def test_keras3_prune_and_qat_through_the_tf_keras_rebuild(
    keras3_digits, digits, tmp_path, zero_fraction
) -> None:
    rep = convert(
        keras3_digits,
        output=tmp_path / "pq.tflite",
        data=digits.train,
        eval_data=digits.test,
        prune=0.5,
        qat=True,
        epochs=2,
    )
    rebuild = next(s for s in rep["steps"] if s["name"] == "keras3_rebuild")
    assert rebuild["keras_version"].startswith("3.") and rebuild["max_abs_output_diff"] < 1e-4
    names = [s["name"] for s in rep["steps"]]
    assert (
        names.index("keras3_rebuild") < names.index("qat_check") < names.index("prune") < names.index("qat")
    )
    prune = next(s for s in rep["steps"] if s["name"] == "prune")
    assert abs(prune["sparsity"]["achieved"] - 0.5) <= 0.05
    assert zero_fraction(Path(rep["output"]["path"])) >= 0.4
    # Accuracy is measured against the Keras 3 model itself.
    assert rep["metrics"]["float_accuracy"] > 0.85 and rep["metrics"]["accuracy_drop"] <= 1.5


def test_keras3_layer_without_a_tf_keras_twin_is_named(digits, tmp_path) -> None:
    model = _keras3_model(tmp_path / "odd.keras", "odd")
    with pytest.raises(ConvertError) as exc:
        convert(model, output=tmp_path / "o.tflite", data=digits.train, qat=True)
    assert "rms (RMSNormalization" in exc.value.what
    assert "conv1" not in exc.value.what and "bn1" not in exc.value.what
