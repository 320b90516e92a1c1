"""Labels and input normalization travel inside the .tflite, read back by the device's pure-Python reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converter.api import convert
from converter.errors import ConvertError
from edge.model import metadata


def test_image_folder_class_names_and_normalization_are_embedded(digits, tmp_path, litert) -> None:
    from converter import examples

    folder = tmp_path / "imgs"
    examples.export_images(folder, per_class=12, size=8, split="train")
    for d in folder.iterdir():  # class names people use, not indices
        d.rename(folder / f"digit_{d.name}")
    rep = convert(digits.model, output=tmp_path / "m.tflite", data=folder, normalize="-1-1")
    want = [f"digit_{i}" for i in range(10)]
    assert rep["metadata"]["labels"] == want
    assert rep["metadata"]["labels_source"] == "image folder class names"
    assert rep["metadata"]["input"] == {"layout": "NHWC", "normalize": "-1-1", "mean": 127.5, "std": 127.5}
    meta = metadata.read(tmp_path / "m.tflite")
    assert meta is not None
    assert meta.labels == dict(enumerate(want))
    assert (meta.input_mean, meta.input_std, meta.input_layout) == (127.5, 127.5, "NHWC")
    # The entry does not disturb the runtimes.
    assert rep["compatibility"]["ai_edge_litert"]["ok"] and rep["compatibility"]["tflite_runtime"]["ok"]


def test_labels_file_wins_and_must_match_the_class_count(digits, tmp_path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(10)) + "\n")
    rep = convert(digits.model, output=tmp_path / "m.tflite", labels=labels, quantize_mode="float16")
    assert metadata.read(tmp_path / "m.tflite").labels[9] == "class 9"
    assert rep["metadata"]["input"]["mean"] is None  # no image folder, no --normalize: not known
    labels.write_text("a\nb\nc\n")
    with pytest.raises(ConvertError) as exc:
        convert(digits.model, output=tmp_path / "m.tflite", labels=labels, quantize_mode="float16")
    assert "3 labels" in exc.value.what and "10 outputs" in exc.value.what


def test_int8_model_carries_metadata_and_stays_lossless(digits, tmp_path, litert) -> None:
    rep = convert(
        digits.model, output=tmp_path / "m.tflite", data=digits.train, eval_data=digits.test, normalize="0-1"
    )
    out = Path(rep["output"]["path"])
    meta = metadata.read(out)
    assert meta is not None and (meta.input_mean, meta.input_std) == (0.0, 255.0)
    assert meta.raw["tool"].startswith("edge-convert")
    assert rep["metrics"]["tflite_accuracy"] == pytest.approx(
        float((litert(out, digits.x_test).argmax(1) == digits.y_test).mean()), abs=1e-4
    )
    assert json.loads(Path(rep["output"]["report_path"]).read_text())["metadata"]["input"]["std"] == 255.0


def test_models_without_metadata_read_as_none_and_bad_json_is_refused(digits, tmp_path) -> None:
    from converter import _tf
    from converter.shrink import share_quantization_vectors
    from edge.model.tflite_file import TFLiteFormatError

    model = _tf.keras().models.load_model(digits.model, compile=False)
    plain = _tf.tf().lite.TFLiteConverter.from_keras_model(model).convert()
    assert metadata.parse(plain) is None
    bad = share_quantization_vectors(plain, {metadata.METADATA_NAME: b"[1, 2"})
    with pytest.raises(TFLiteFormatError):
        metadata.parse(bad)
    # A second write replaces the entry instead of adding another.
    twice = share_quantization_vectors(bad, {metadata.METADATA_NAME: b'{"labels": ["x"]}'})
    assert metadata.parse(twice).labels == {0: "x"}
    from tensorflow.lite.python import schema_py_generated as schema

    def buffers(b: bytes) -> int:
        return len(schema.ModelT.InitFromPackedBuf(bytearray(b), 0).buffers)

    assert (
        buffers(twice) == buffers(bad) == buffers(plain) + 1
    )  # the entry's buffer is rewritten, not orphaned


def test_device_side_resolve_prefers_flags_then_the_model(digits, tmp_path) -> None:
    from edge.errors import InputError

    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"n{i}" for i in range(10)))
    convert(
        digits.model, output=tmp_path / "m.tflite", labels=labels, normalize="0-1", quantize_mode="float16"
    )
    model = tmp_path / "m.tflite"
    r = metadata.resolve(model, classes=10)
    assert (r.labels[3], r.mean, r.std, r.labels_from, r.normalization_from) == (
        "n3",
        0.0,
        255.0,
        "model",
        "model",
    )
    r = metadata.resolve(model, labels={i: f"x{i}" for i in range(11)}, mean=127.5, std=127.5, classes=10)
    assert (r.labels[3], r.mean, r.std, r.labels_from, r.normalization_from) == (
        "x3",
        127.5,
        127.5,
        "flag",
        "flag",
    )
    assert r.warnings and "11 labels" in r.warnings[0] and "10 classes" in r.warnings[0]
    with pytest.raises(InputError) as exc:
        metadata.resolve(model, labels={0: "a", 1: "b"}, classes=10)
    assert "names 2 of the model's 10 classes" in exc.value.what
