"""Each bad input gets exit code 2 and a message that says what was wrong and what to do."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from converter.api import convert
from converter.errors import ConvertError
from tests.support.process import run_module


def _cli(*args: str) -> tuple[int, str]:
    proc = run_module("converter", *args, "-q")
    return proc.returncode, proc.stderr


def test_fast_errors_before_tensorflow(tmp_path: Path) -> None:
    m = str(tmp_path / "m.h5")
    (tmp_path / "m.h5").write_bytes(b"never read: option errors come first")
    (tmp_path / "model.pt").write_bytes(b"x")
    (tmp_path / "emptydir").mkdir()
    cases = [
        ((str(tmp_path / "missing.h5"),), "model not found"),
        ((str(tmp_path / "model.pt"),), "expected .h5, .keras, .onnx or a SavedModel folder"),
        ((str(tmp_path / "emptydir"),), "not a SavedModel"),
        ((str(tmp_path / "missing.h5"), "--quantize", "int9"), "invalid choice"),
        ((m, "--prune", "0.5"), "needs labelled data"),
        ((m, "--edgetpu"), "needs calibration data"),
        ((m, "--edgetpu", "--quantize", "float16"), "--edgetpu needs a fully int8 model"),
        ((m, "--quantize", "int8"), "calibration data; no --data was given"),
        ((m, "--prune", "1.5", "--data", m), "between 0 and 1 (e.g. 0.5); received 1.5"),
        ((m, "--qat", "--quantize", "float16", "--data", m), "--qat trains the model for int8"),
        ((m, "--max-accuracy-drop", "1", "--quantize", "int8", "--data", m), "--quantize was also given"),
    ]
    for args, message in cases:
        code, err = _cli(*args)
        assert code == 2, (args, err)
        assert message in err, (args, err)
        assert "Traceback" not in err


def test_bad_models_and_data_via_cli(digits, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(os.urandom(2048))
    np.savez(tmp_path / "wrong_shape.npz", x=np.zeros((20, 9, 9), np.float32), y=np.zeros(20, np.int64))
    np.save(tmp_path / "nolabels.npy", np.zeros((20, 8, 8, 1), np.float32))
    np.savez(tmp_path / "strings.npz", x=np.array([["a"] * 64] * 4).reshape(4, 8, 8, 1))
    m = str(digits.model)
    cases = [
        ((str(garbage),), "is not a Keras model file", "model.save"),
        (
            (m, "--data", str(tmp_path / "wrong_shape.npz")),
            "samples have shape (20, 9, 9), the model expects (N, 8, 8, 1)",
            "fix:",
        ),
        ((m, "--data", str(tmp_path / "strings.npz")), "expected numbers", "fix:"),
        ((m, "--qat", "--data", str(tmp_path / "nolabels.npy")), "has no labels", "x and y"),
    ]
    for args, what, fix in cases:
        code, err = _cli(*args)
        assert code == 2, (args, err[-2000:])
        assert what in err and fix in err, (args, err[-2000:])
        assert "Traceback" not in err


def _with_layer(layer_factory, path: Path) -> Path:
    from converter import _tf

    keras = _tf.keras()
    model = keras.Sequential(
        [
            keras.layers.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(16),
            layer_factory(keras),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.save(path)
    return path


def test_layers_tfmot_cannot_handle_are_named_with_the_way_out(digits, tmp_path: Path) -> None:
    ln = _with_layer(lambda k: k.layers.LayerNormalization(name="norm"), tmp_path / "ln.h5")
    code, err = _cli(str(ln), "--qat", "--data", str(digits.train))
    assert code == 2
    assert "cannot quantization-aware train 1 layer: norm (LayerNormalization)" in err
    assert "--qat-skip norm" in err
    prelu = _with_layer(lambda k: k.layers.PReLU(name="act"), tmp_path / "prelu.h5")
    with pytest.raises(ConvertError) as exc:
        convert(prelu, output=tmp_path / "p.tflite", data=digits.train, prune=0.5, epochs=1)
    assert "'act' (PReLU) cannot be pruned" in exc.value.what and "--prune-skip act" in exc.value.fix
    # The offered way out works: the layer stays dense, the rest is pruned.
    rep = convert(
        prelu, output=tmp_path / "p.tflite", data=digits.train, prune=0.5, prune_skip=["act"], epochs=1
    )
    assert next(s for s in rep["steps"] if s["name"] == "prune")["sparsity"]["achieved"] == pytest.approx(
        0.5, abs=0.02
    )
    assert rep["compatibility"]["ai_edge_litert"]["ok"]


def test_keras3_model_converts_and_is_rebuilt_for_tfmot(digits, tmp_path: Path) -> None:
    import keras  # Keras 3, the package TensorFlow 2.16+ installs

    assert keras.__version__.startswith("3")
    model = keras.Sequential(
        [keras.layers.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    )
    path = tmp_path / "k3.keras"
    model.save(path)
    # Pruning goes through the tf-keras rebuild (a Sequential keeps its graph too).
    rep = convert(path, data=digits.train, eval_split=0.3, prune=0.5, epochs=1, output=tmp_path / "p.tflite")
    assert next(s for s in rep["steps"] if s["name"] == "keras3_rebuild")["layers"] == 2
    # Without tfmot steps it converts (through Keras 3's own SavedModel export) and runs.
    rep = convert(path, data=digits.train, eval_split=0.3, calibration_samples=8)
    assert rep["input"]["flavor"] == "keras3" and rep["quantization"]["mode"] == "int8"
    assert rep["compatibility"]["ai_edge_litert"]["ok"] and rep["metrics"]["top1_agreement"] is not None
    assert any("only 8 samples (fewer than 100)" in w for w in rep["warnings"])
    assert any("calibration misses classes" in w for w in rep["warnings"])


def test_savedmodel_folder_and_image_folder(digits, tmp_path: Path, litert) -> None:
    from converter import _tf, examples

    keras = _tf.keras()
    model = keras.models.load_model(digits.model, compile=False)
    saved = tmp_path / "saved"
    model.save(saved)  # tf-keras SavedModel folder
    images = tmp_path / "images"
    examples.export_images(images, per_class=12, size=32, split="test")
    assert len(list(images.glob("*/*.png"))) == 120
    rep = convert(saved, data=images, eval_split=0.5, calibration_samples=60)
    assert rep["input"]["format"] == "savedmodel"
    assert Path(rep["output"]["path"]) == tmp_path / "saved.tflite"
    assert rep["data"]["samples"] == 120
    # 32x32 upscaled PNGs resized back to the model's 8x8 still classify well.
    assert rep["metrics"]["tflite_accuracy"] >= 0.85
    assert rep["metrics"]["top1_agreement"] >= 0.9
