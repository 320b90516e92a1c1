"""edge.model.runtime / preprocess / postprocess against the real Coral test models in ai-edge-litert."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.errors import DelegateError, ModelLoadError
from edge.inference.postprocess import classify
from edge.inference.preprocess import decode_image, image_to_tensor
from edge.inference.tasks.select import CLASSIFIER, choose
from edge.model import tflite_file
from edge.model.labels import parse_labels, read_labels
from edge.model.runtime import load_model


def _top(model_path: Path, image: Path, labels: dict[int, str], k: int = 3):
    m = load_model(model_path)
    x = image_to_tensor(decode_image(image), m.inputs[0])
    m.interpreter.set_tensor(m.inputs[0].index, x)
    m.interpreter.invoke()
    return m, classify(m.interpreter.get_tensor(m.outputs[0].index), m.outputs[0], labels, k)


def test_mobilenet_finds_the_cat(coral: Path) -> None:
    m, top = _top(
        coral / "mobilenet_v1_0.25_128_quant.tflite",
        coral / "cat.bmp",
        read_labels(coral / "imagenet_labels.txt"),
    )
    assert choose(m.outputs).task == CLASSIFIER
    assert any(282 <= c.index <= 286 for c in top), top
    assert all("cat" in (c.label or "") for c in top if 282 <= c.index <= 286)
    assert list(c.score for c in top) == sorted((c.score for c in top), reverse=True)


def test_lstm_says_nine(coral: Path) -> None:
    _, top = _top(coral / "keras_lstm_mnist_ptq.tflite", coral / "mnist_nine.bmp", {})
    assert top[0].index == 9 and top[0].score > 0.95


def test_uint8_ranking_does_not_wrap() -> None:
    from edge.model.runtime import TensorSpec

    spec = TensorSpec("o", 0, (1, 4), (1, 4), np.dtype(np.uint8), 1 / 256, 0)
    top = classify(np.array([[0, 255, 3, 128]], dtype=np.uint8), spec, {}, 4)
    assert [c.index for c in top] == [1, 3, 2, 0]


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_8bit_ranking_matches_the_dequantized_one(dtype: type) -> None:
    """classify ranks raw 8-bit values and de-quantizes only the top k: same classes, order (ties
    included: the higher index first, as a stable sort of the de-quantized scores reversed) and scores."""
    from edge.inference.preprocess import dequantize
    from edge.model.runtime import TensorSpec

    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    spec = TensorSpec("o", 0, (1, 1001), (1, 1001), np.dtype(dtype), 0.00390625, int(info.min) // 2)
    for narrow in (False, True):  # narrow: few distinct values, so the top k is full of ties
        hi = int(info.min) + 4 if narrow else int(info.max) + 1
        y = rng.integers(info.min, hi, size=(1, 1001), dtype=dtype)
        scores = dequantize(y.reshape(-1), spec)
        order = np.argsort(scores, kind="stable")[::-1][:5]
        for threshold in (-1.0, float(scores[order[2]])):
            expected = [(int(i), float(scores[i])) for i in order if float(scores[i]) >= threshold]
            top = classify(y, spec, {}, 5, threshold)
            assert [(c.index, c.score) for c in top] == expected


def test_flatbuffer_reader_matches_runtime(coral: Path) -> None:
    path = coral / "mobilenet_v1_0.25_128_quant.tflite"
    info = tflite_file.read(path)
    m = load_model(path)
    assert [t.shape for t in info.subgraphs[0].inputs] == [t.shape for t in m.inputs]
    assert info.subgraphs[0].inputs[0].zero_point == (m.inputs[0].zero_point,)
    assert "CONV_2D" in info.max_op_versions and not info.custom_ops


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"", "0 bytes"),
        (b"\x00" * 64, "expected b'TFL3'"),
    ],
)
def test_bad_files_explain(tmp_path: Path, content: bytes, needle: str) -> None:
    p = tmp_path / "m.tflite"
    p.write_bytes(content)
    with pytest.raises(ModelLoadError, match=needle) as err:
        load_model(p)
    assert err.value.fix


def test_truncated_model(tmp_path: Path, coral: Path) -> None:
    data = (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    p = tmp_path / "m.tflite"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(p)


def test_custom_op_and_edgetpu_errors(tmp_path: Path, coral: Path) -> None:
    with pytest.raises(ModelLoadError, match="fake-op-double"):
        load_model(coral / "model_invoking_error.tflite")
    lone = tmp_path / "keras_lstm_mnist_ptq_edgetpu.tflite"
    shutil.copy(coral / lone.name, lone)
    with pytest.raises(DelegateError, match="No Edge TPU was detected") as err:
        load_model(lone)
    assert "keras_lstm_mnist_ptq.tflite" in err.value.fix


def test_edgetpu_falls_back_to_cpu_twin(coral: Path) -> None:
    m = load_model(coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")
    assert m.path.name == "mobilenet_v1_0.25_128_quant.tflite" and m.delegate == "cpu"
    assert "fell back to the CPU twin" in m.notes[0]
    with pytest.raises(DelegateError):
        load_model(coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite", delegate="edgetpu")


def test_labels_formats() -> None:
    assert parse_labels("cat\ndog\n") == {0: "cat", 1: "dog"}
    assert parse_labels("0 background\n5 tabby cat\n") == {0: "background", 5: "tabby cat"}
