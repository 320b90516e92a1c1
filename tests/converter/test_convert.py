"""edge-convert on a digits CNN trained by the test: every figure of the report is recomputed here."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from converter.api import convert
from tests.support.process import run_module

CONTRACT = {
    "input": {"path", "format", "parameters", "size_bytes"},
    "output": {"path", "size_bytes", "gzip_size_bytes", "sha256"},
    "quantization": {"mode", "input_dtype", "output_dtype"},
    "metrics": {"float_accuracy", "tflite_accuracy", "accuracy_drop", "top1_agreement", "output_sqnr_db"},
    "compatibility": {"ai_edge_litert", "tflite_runtime", "edgetpu"},
}


def _check_contract(rep: dict) -> None:
    for block, keys in CONTRACT.items():
        assert keys <= set(rep[block]), f"{block} misses {keys - set(rep[block])}"
    for c in rep["compatibility"].values():
        assert {"ok", "reason"} <= set(c)
    assert all({"name", "seconds"} <= set(s) for s in rep["steps"])
    out = Path(rep["output"]["path"])
    data = out.read_bytes()
    assert rep["output"]["size_bytes"] == len(data)
    assert rep["output"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert rep["output"]["gzip_size_bytes"] == len(gzip.compress(data, 9))


def _step(rep: dict, name: str) -> dict:
    return next(s for s in rep["steps"] if s["name"] == name)


def _accuracy(outputs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(outputs.argmax(axis=1) == y))


def test_bare_cli_writes_a_float16_model_every_runtime_loads(digits, tmp_path, litert) -> None:
    model = tmp_path / "digits.h5"
    model.write_bytes(digits.model.read_bytes())
    proc = run_module("converter", str(model), "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    out = tmp_path / "digits.tflite"  # default: next to the input
    assert rep["output"]["path"] == str(out) and out.exists()
    assert (
        json.loads((tmp_path / "digits.report.json").read_text())["output"]["sha256"]
        == rep["output"]["sha256"]
    )
    _check_contract(rep)
    assert rep["quantization"]["mode"] == "float16"
    assert rep["metrics"]["tflite_accuracy"] is None  # no data, nothing measured
    assert any("--data" in h for h in rep["hints"])
    # Both runtimes really load it (tflite-runtime 2.14 in its own venv).
    assert rep["compatibility"]["ai_edge_litert"]["ok"]
    assert rep["compatibility"]["tflite_runtime"]["ok"], rep["compatibility"]["tflite_runtime"]
    assert rep["compatibility"]["tflite_runtime"]["method"] == "load"
    assert _accuracy(litert(out, digits.x_test), digits.y_test) >= digits.keras_test_accuracy - 0.01
    # The table goes to stdout without --json.
    proc = run_module("converter", str(model), "-q", "-o", str(tmp_path / "t.tflite"))
    assert proc.returncode == 0, proc.stderr
    assert "quantization float16" in proc.stdout and "tflite_runtime" in proc.stdout


def test_int8_with_data_report_figures_are_right(digits, tmp_path, litert) -> None:
    from converter import _tf

    rep = convert(
        digits.model,
        output=tmp_path / "int8.tflite",
        data=digits.train,
        eval_data=digits.test,
        calibration_samples=150,
    )
    _check_contract(rep)
    assert rep["quantization"] == {
        "mode": "int8",
        "input_dtype": "int8",
        "output_dtype": "int8",
        "chosen_by": "default",
    }
    out = Path(rep["output"]["path"])
    t_out = litert(out, digits.x_test)
    keras_model = _tf.keras().models.load_model(digits.model, compile=False)
    f_out = keras_model.predict(digits.x_test, verbose=0)
    m = rep["metrics"]
    assert m["eval_samples"] == len(digits.y_test)
    assert m["tflite_accuracy"] == pytest.approx(_accuracy(t_out, digits.y_test), abs=1e-4)
    assert m["float_accuracy"] == pytest.approx(_accuracy(f_out, digits.y_test), abs=1e-4)
    assert m["accuracy_drop"] == pytest.approx((m["float_accuracy"] - m["tflite_accuracy"]) * 100, abs=0.02)
    assert m["top1_agreement"] == pytest.approx(float(np.mean(t_out.argmax(1) == f_out.argmax(1))), abs=1e-4)
    assert m["output_sqnr_db"] > 15
    assert m["accuracy_drop"] <= 2.0
    assert rep["data"]["calibration_samples"] == 150
    for name in ("ai_edge_litert", "tflite_runtime"):
        assert rep["compatibility"][name]["ok"], rep["compatibility"][name]
    # int8 is ~4x smaller than float32 for this model's weights.
    f32 = convert(digits.model, output=tmp_path / "f32.tflite", quantize_mode="none")
    assert rep["output"]["size_bytes"] * 2.5 < f32["output"]["size_bytes"]
    assert f32["quantization"]["mode"] == "none" and f32["compatibility"]["tflite_runtime"]["ok"]


def test_prune_then_qat_keeps_sparsity_and_accuracy(digits, tmp_path, litert, zero_fraction) -> None:
    plain = convert(digits.model, output=tmp_path / "plain.tflite", data=digits.train, eval_data=digits.test)
    rep = convert(
        digits.model,
        output=tmp_path / "pq.tflite",
        data=digits.train,
        eval_data=digits.test,
        prune=0.5,
        qat=True,
        epochs=3,
    )
    _check_contract(rep)
    names = [s["name"] for s in rep["steps"] if s["name"] not in ("import_tensorflow", "load")]
    assert names[:4] == ["qat_check", "prune", "qat", "quantize"]  # the QAT check comes before any training
    prune_step = _step(rep, "prune")
    assert prune_step["sparsity"]["target"] == 0.5
    achieved = prune_step["sparsity"]["achieved"]
    assert 0.48 <= achieved <= 0.52
    assert _step(rep, "qat")["preserve_sparsity"] is True
    # Independently: zeros survive QAT and int8 conversion in the .tflite weights.
    out = Path(rep["output"]["path"])
    tflite_zeros = zero_fraction(out)
    assert tflite_zeros == pytest.approx(achieved, abs=0.03)
    assert zero_fraction(Path(plain["output"]["path"])) < 0.1
    assert rep["output"]["gzip_size_bytes"] < 0.8 * plain["output"]["gzip_size_bytes"]
    acc = _accuracy(litert(out, digits.x_test), digits.y_test)
    assert rep["metrics"]["tflite_accuracy"] == pytest.approx(acc, abs=1e-4)
    assert rep["metrics"]["accuracy_drop"] <= 2.0
    assert rep["compatibility"]["tflite_runtime"]["ok"]


@pytest.mark.parametrize(
    "kw",
    [
        {"prune": 0.6},  # prune only, then int8 PTQ
        {"qat": True, "io_dtype": "uint8"},  # QAT only, uint8 I/O
        {"quantize_mode": "int16x8"},
        {"prune": 0.3, "quantize_mode": "float16"},
    ],
    ids=["prune", "qat-uint8", "int16x8", "prune-float16"],
)
def test_every_step_and_mode_runs_in_ai_edge_litert(digits, tmp_path, litert, kw) -> None:
    rep = convert(
        digits.model, output=tmp_path / "m.tflite", data=digits.train, eval_data=digits.test, epochs=1, **kw
    )
    out = Path(rep["output"]["path"])
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(out))
    it.allocate_tensors()
    assert np.dtype(it.get_input_details()[0]["dtype"]).name == rep["quantization"]["input_dtype"]
    assert np.dtype(it.get_output_details()[0]["dtype"]).name == rep["quantization"]["output_dtype"]
    acc = _accuracy(litert(out, digits.x_test), digits.y_test)
    assert rep["metrics"]["tflite_accuracy"] == pytest.approx(acc, abs=1e-4)
    assert acc > 0.85
    if "prune" in kw:
        assert _step(rep, "prune")["sparsity"]["achieved"] == pytest.approx(kw["prune"], abs=0.02)
    assert rep["compatibility"]["ai_edge_litert"]["ok"]


def test_dynamic_range_fails_tflite_runtime_by_load_and_by_table(
    digits, tmp_path, monkeypatch, tflite_python
) -> None:
    from converter import compat

    rep = convert(
        digits.model,
        output=tmp_path / "dyn.tflite",
        quantize_mode="dynamic",
        tflite_runtime_python=tflite_python,
    )
    real = rep["compatibility"]["tflite_runtime"]
    assert real["method"] == "load" and not real["ok"] and "FULLY_CONNECTED" in real["reason"]
    assert rep["compatibility"]["ai_edge_litert"]["ok"]
    assert any("FULLY_CONNECTED v12" in w for w in rep["warnings"])
    out = Path(rep["output"]["path"])
    monkeypatch.delenv("EDGE_TFLITE_RUNTIME_PYTHON")
    table = compat.check(out)["tflite_runtime"]
    assert table["method"] == "op_versions" and not table["ok"] and "FULLY_CONNECTED v12" in table["reason"]
    # A python without tflite_runtime (this one) falls back to the table and says so.
    import sys

    fallback = compat.check(out, tflite_python=sys.executable)["tflite_runtime"]
    assert fallback["method"] == "op_versions" and "has no tflite_runtime" in fallback["reason"]
    # The table agrees with the real runtime on the int8 and float16 models too.
    for mode in ("int8", "float16"):
        r = convert(
            digits.model,
            output=tmp_path / f"{mode}.tflite",
            quantize_mode=mode,
            data=digits.train,
            eval_split=0.5,
            calibration_samples=100,
        )
        assert r["compatibility"]["tflite_runtime"]["method"] == "op_versions"
        assert r["compatibility"]["tflite_runtime"]["ok"]
        monkeypatch.setenv("EDGE_TFLITE_RUNTIME_PYTHON", tflite_python)
        assert compat.check(Path(r["output"]["path"]))["tflite_runtime"]["method"] == "load"
        assert compat.check(Path(r["output"]["path"]))["tflite_runtime"]["ok"]
        monkeypatch.delenv("EDGE_TFLITE_RUNTIME_PYTHON")


def test_max_accuracy_drop_keeps_the_smallest_candidate_within_budget(digits, tmp_path, litert) -> None:
    rep = convert(
        digits.model,
        output=tmp_path / "best.tflite",
        data=digits.train,
        eval_data=digits.test,
        max_accuracy_drop=1.0,
        epochs=1,
    )
    cands = rep["candidates"]
    assert [c["name"] for c in cands] == ["int8", "int8+qat", "int16x8", "float16", "float32"]
    chosen = [c for c in cands if c["chosen"]]
    assert len(chosen) == 1
    chosen = chosen[0]
    assert chosen["within_budget"] and chosen["accuracy_drop"] <= 1.0
    assert rep["output"]["size_bytes"] == chosen["size_bytes"]
    assert rep["quantization"]["mode"] == chosen["mode"]
    assert all(c["size_bytes"] >= chosen["size_bytes"] for c in cands if c["within_budget"])
    assert max(c["size_bytes"] for c in cands) > 2 * chosen["size_bytes"]  # float32 vs an 8-bit winner
    assert rep["metrics"]["tflite_accuracy"] == pytest.approx(
        _accuracy(litert(Path(rep["output"]["path"]), digits.x_test), digits.y_test), abs=1e-4
    )
    assert rep["metrics"]["tflite_accuracy"] == pytest.approx(chosen["tflite_accuracy"], abs=1e-4)


def test_edgetpu_enforces_needs_and_says_the_compiler_was_not_run(digits, tmp_path) -> None:
    rep = convert(
        digits.model,
        output=tmp_path / "tpu.tflite",
        data=digits.train,
        eval_data=digits.test,
        edgetpu=True,
        io_dtype="uint8",
    )
    tpu = rep["compatibility"]["edgetpu"]
    assert tpu["compiler"]["run"] is False and "not run" in tpu["compiler"]["reason"]
    assert not (tmp_path / "tpu_edgetpu.tflite").exists()
    from edge.model import tflite_file

    info = tflite_file.read(tmp_path / "tpu.tflite")
    assert info.subgraphs[0].inputs[0].shape_signature == (1, 8, 8, 1)  # static, batch 1
    assert info.subgraphs[0].inputs[0].dtype == "UINT8"
    assert tpu["ok"], tpu["reason"]
    assert "FULLY_CONNECTED" in tpu["mapped_ops"] and tpu["cpu_ops"] == []
    # A float model is reported as not Edge TPU ready, with the ops falling back.
    f16 = convert(digits.model, output=tmp_path / "f16.tflite")
    assert not f16["compatibility"]["edgetpu"]["ok"]
    assert "not 8-bit" in f16["compatibility"]["edgetpu"]["reason"]
    assert f16["compatibility"]["edgetpu"]["cpu_ops"]  # DEQUANTIZE is not an Edge TPU op


def test_sharing_quantization_vectors_is_lossless_and_loads_everywhere(
    digits, tmp_path, litert, tflite_python
) -> None:
    import subprocess

    from converter import _tf
    from converter.shrink import share_quantization_vectors

    tf, keras = _tf.tf(), _tf.keras()
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.models.load_model(digits.model, compile=False))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([s[None]] for s in digits.x_test[:50])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    original = conv.convert()
    deduplicated = share_quantization_vectors(original)
    assert len(deduplicated) < len(original)
    (tmp_path / "a.tflite").write_bytes(original)
    (tmp_path / "b.tflite").write_bytes(deduplicated)
    np.testing.assert_array_equal(
        litert(tmp_path / "a.tflite", digits.x_test), litert(tmp_path / "b.tflite", digits.x_test)
    )
    proc = subprocess.run(
        [
            tflite_python,
            "-c",
            "import sys, tflite_runtime.interpreter as t; "
            "i = t.Interpreter(model_path=sys.argv[1]); i.allocate_tensors(); i.invoke(); print('ok')",
            str(tmp_path / "b.tflite"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip() == "ok", proc.stderr


def test_api_takes_a_model_object_and_leaves_it_untouched(digits, tmp_path) -> None:
    from converter import _tf

    model = _tf.keras().models.load_model(digits.model, compile=False)
    before = [w.copy() for w in model.get_weights()]
    rep = convert(
        model, output=tmp_path / "obj.tflite", data=digits.train, eval_data=digits.test, prune=0.5, epochs=1
    )
    assert _step(rep, "prune")["sparsity"]["achieved"] == pytest.approx(0.5, abs=0.02)
    after = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # pruning worked on a copy
    assert (tmp_path / "obj.report.json").exists()
