"""ONNX input (PyTorch's route): onnx2tf, NCHW -> NHWC, then the same int8/int16x8/float16 paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter.api import convert
from converter.errors import ConvertError
from converter.examples import digits_onnx


@pytest.fixture(scope="module")
def onnx_digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return digits_onnx(tmp_path_factory.mktemp("onnx"))


def _onnx_reference(model: Path, x_nchw: np.ndarray) -> np.ndarray:
    import onnxruntime

    sess = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x_nchw[i : i + 1]})[0] for i in range(len(x_nchw))])


def test_onnx_nchw_model_converts_to_int8_with_the_full_report(onnx_digits, tmp_path, litert) -> None:
    model, train, test = onnx_digits
    rep = convert(model, output=tmp_path / "m.tflite", data=train, eval_data=test)
    assert rep["input"]["format"] == "onnx" and rep["input"]["layout"] == "NCHW"
    assert rep["metadata"]["input"]["layout"] == "NHWC"
    assert any("NCHW" in h and "NHWC" in h for h in rep["hints"])
    assert rep["quantization"]["mode"] == "int8" and rep["quantization"]["input_dtype"] == "int8"
    assert rep["compatibility"]["ai_edge_litert"]["ok"] and rep["compatibility"]["tflite_runtime"]["ok"]
    # The .tflite takes NHWC; its outputs, fed the NHWC transpose, follow the ONNX model's on NCHW data.
    with np.load(test) as z:
        x_nchw, y = z["x"].astype(np.float32), z["y"]
    out = Path(rep["output"]["path"])
    t_out = litert(out, np.transpose(x_nchw, (0, 2, 3, 1)))
    ref = _onnx_reference(model, x_nchw)
    m = rep["metrics"]
    assert m["float_accuracy"] == pytest.approx(float(np.mean(ref.argmax(1) == y)), abs=1e-4)
    assert m["tflite_accuracy"] == pytest.approx(float(np.mean(t_out.argmax(1) == y)), abs=1e-4)
    assert m["float_accuracy"] > 0.85 and m["accuracy_drop"] <= 1.5
    assert m["top1_agreement"] == pytest.approx(float(np.mean(ref.argmax(1) == t_out.argmax(1))), abs=1e-4)
    names = [s["name"] for s in rep["steps"]]
    assert "load" in names and "quantize" in names and "evaluate" in names


@pytest.mark.parametrize("mode", ["int16x8", "float16"])
def test_onnx_other_modes(onnx_digits, tmp_path, mode) -> None:
    model, train, test = onnx_digits
    rep = convert(model, output=tmp_path / f"{mode}.tflite", data=train, eval_data=test, quantize_mode=mode)
    assert rep["quantization"]["mode"] == mode
    assert rep["metrics"]["top1_agreement"] >= 0.98
    assert rep["compatibility"]["ai_edge_litert"]["ok"]


def test_onnx_prune_or_qat_is_refused_with_the_reason(onnx_digits, tmp_path) -> None:
    model, train, _ = onnx_digits
    for kw in ({"prune": 0.5}, {"qat": True}):
        with pytest.raises(ConvertError) as exc:
            convert(model, output=tmp_path / "x.tflite", data=train, **kw)
        assert "ONNX" in exc.value.what and "tf-keras" in exc.value.what
        assert "post-training int8" in exc.value.fix


def test_broken_onnx_file_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx protobuf at all")
    with pytest.raises(ConvertError) as exc:
        convert(bad, output=tmp_path / "b.tflite")
    assert "bad.onnx" in exc.value.what


def test_keras_to_onnx_writes_what_the_keras_model_computes(tmp_path) -> None:
    """The benchmark's realistic ONNX model (MobileNetV2 as PyTorch exports it) must be the Keras model."""
    import onnx
    import onnxruntime

    from converter import examples

    model = examples.build_mobilenet_v2()
    rng = np.random.default_rng(1)
    for layer in model.layers:  # non-trivial BN statistics, so that folding them is really checked
        if type(layer).__name__ == "BatchNormalization":
            g, b, mean, var = layer.get_weights()
            layer.set_weights(
                [g * rng.uniform(0.5, 2, g.shape), b + rng.normal(0, 0.1, b.shape), mean + 0.1, var * 1.5]
            )
    dense = model.layers[-1]
    w, b = dense.get_weights()
    dense.set_weights([w * 30, b])  # a confident softmax: differences show in the outputs
    path = examples.keras_to_onnx(model, tmp_path / "mnv2.onnx")
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops and "Pad" not in ops  # folded, as torch.onnx.export does
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    x = rng.random((4, 32, 32, 3), dtype=np.float32)
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": s[None].transpose(0, 3, 1, 2)})[0] for s in x])
    want = model.predict(x, verbose=0)
    assert want.std() > 1e-3  # the outputs differ between samples/classes: the comparison means something
    np.testing.assert_allclose(got, want, atol=1e-5)
