"""QAT and pruning on CNNs people deploy: BatchNormalization folded by tfmot, refusals before any training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from converter.api import convert
from converter.errors import ConvertError


@dataclass(frozen=True)
class Trained:
    model: Path
    train: Path
    test: Path
    x_test: np.ndarray
    y_test: np.ndarray


@pytest.fixture(scope="session")
def rgb_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from converter import examples

    root = tmp_path_factory.mktemp("rgb")
    return examples.export_rgb_npz(root / "train.npz", "train"), examples.export_rgb_npz(
        root / "test.npz", "test"
    )


def _trained(root: Path, name: str, model, data: tuple[Path, Path], epochs: int) -> Trained:
    from converter import examples

    examples.train_rgb_cnn(model, root / f"{name}.h5", epochs=epochs)
    x, y = examples.digits_rgb("test")
    return Trained(root / f"{name}.h5", data[0], data[1], x, y)


@pytest.fixture(scope="session")
def resnet(tmp_path_factory: pytest.TempPathFactory, rgb_data) -> Trained:
    from converter import examples

    return _trained(tmp_path_factory.mktemp("resnet"), "resnet", examples.build_resnet(), rgb_data, epochs=6)


def _with_rejected_layers(path: Path, layer_norm: bool = True) -> None:
    """Conv -> LayerNormalization -> BatchNormalization (not after a conv): tfmot rejects both."""
    from converter import _tf

    keras = _tf.keras()
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv")(inp)
    if layer_norm:
        x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.BatchNormalization(name="lone_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="probs")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(path)


def test_resnet_with_batchnorm_qat_keeps_int8_accuracy(resnet, tmp_path, litert) -> None:
    rep = convert(
        resnet.model,
        output=tmp_path / "q.tflite",
        data=resnet.train,
        eval_data=resnet.test,
        qat=True,
        epochs=2,
    )
    names = [s["name"] for s in rep["steps"]]
    assert names.index("qat_check") < names.index("qat")
    m = rep["metrics"]
    assert m["accuracy_drop"] <= 1.5, m
    t_out = litert(Path(rep["output"]["path"]), resnet.x_test)
    assert m["tflite_accuracy"] == pytest.approx(float(np.mean(t_out.argmax(1) == resnet.y_test)), abs=1e-4)
    assert rep["quantization"]["input_dtype"] == "int8"


def test_resnet_prune_then_qat_keeps_sparsity(resnet, tmp_path, zero_fraction) -> None:
    rep = convert(
        resnet.model,
        output=tmp_path / "pq.tflite",
        data=resnet.train,
        eval_data=resnet.test,
        prune=0.5,
        qat=True,
        epochs=2,
    )
    prune = next(s for s in rep["steps"] if s["name"] == "prune")
    assert abs(prune["sparsity"]["achieved"] - 0.5) <= 0.05
    qat = next(s for s in rep["steps"] if s["name"] == "qat")
    assert qat["preserve_sparsity"]
    # The zeros survive QAT (pruning-preserving scheme) into the int8 weights.
    assert zero_fraction(Path(rep["output"]["path"])) >= 0.45
    assert rep["metrics"]["accuracy_drop"] <= 1.5


@pytest.mark.slow
def test_resnet_max_accuracy_drop_tries_qat_and_keeps_an_int8_candidate(resnet, tmp_path) -> None:
    rep = convert(
        resnet.model,
        output=tmp_path / "b.tflite",
        data=resnet.train,
        eval_data=resnet.test,
        max_accuracy_drop=1.0,
        epochs=1,
    )
    by_name = {c["name"]: c for c in rep["candidates"]}
    assert by_name["int8+qat"].get("error") is None and by_name["int8+qat"]["size_bytes"]
    chosen = [c for c in rep["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["within_budget"] and chosen[0]["accuracy_drop"] <= 1.0
    assert rep["quantization"]["mode"] == chosen[0]["mode"] == "int8"


def test_qat_refusal_names_every_rejected_layer_before_any_training(tmp_path, rgb_data, capsys) -> None:
    model = tmp_path / "odd.h5"
    _with_rejected_layers(model)
    with pytest.raises(ConvertError) as exc:
        convert(model, output=tmp_path / "o.tflite", data=rgb_data[0], prune=0.5, qat=True, quiet=False)
    assert "ln (LayerNormalization)" in exc.value.what and "lone_bn (BatchNormalization)" in exc.value.what
    assert "conv" not in exc.value.what.replace("cannot", "")  # the folded/supported layers are not named
    assert "--qat-skip ln --qat-skip lone_bn" in exc.value.fix
    # Nothing was trained: the pruning step never started.
    assert "pruning" not in capsys.readouterr().err
    # The suggested --qat-skip works.
    rep = convert(
        model,
        output=tmp_path / "o.tflite",
        data=rgb_data[0],
        eval_data=rgb_data[1],
        qat=True,
        qat_skip=["ln", "lone_bn"],
        epochs=1,
    )
    assert next(s for s in rep["steps"] if s["name"] == "qat")["skipped_layers"] == ["ln", "lone_bn"]


def test_max_accuracy_drop_lists_a_candidate_it_cannot_build_and_goes_on(tmp_path, rgb_data) -> None:
    model = tmp_path / "odd.h5"
    # tfmot rejects LayerNormalization and the lone BN for QAT; the int16x8 model with LayerNormalization
    # aborts ai-edge-litert (SIGABRT) on its first invoke: both are listed, and the search goes on.
    _with_rejected_layers(model)
    rep = convert(
        model,
        output=tmp_path / "o.tflite",
        data=rgb_data[0],
        eval_data=rgb_data[1],
        max_accuracy_drop=100.0,
        epochs=1,
    )
    by_name = {c["name"]: c for c in rep["candidates"]}
    assert list(by_name) == ["int8", "int8+qat", "int16x8", "float16", "float32"]
    qat = by_name["int8+qat"]
    assert "ln (LayerNormalization)" in qat["error"] and "lone_bn (BatchNormalization)" in qat["error"]
    i16 = by_name["int16x8"]
    assert "int16x8" in i16["error"] and "crashed the process (SIGABRT)" in i16["error"], i16["error"]
    assert i16["size_bytes"] is None and not i16["chosen"] and not i16["within_budget"]
    for name in ("int8", "float16", "float32"):  # built and measured after the crash too
        assert by_name[name].get("error") is None and by_name[name]["size_bytes"] > 0, by_name[name]
        assert by_name[name]["tflite_accuracy"] is not None
    chosen = [c for c in rep["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["size_bytes"] == rep["output"]["size_bytes"]
    assert not any(s["name"] == "qat" for s in rep["steps"])


def test_int16x8_abort_is_a_clear_error_not_a_dead_process(tmp_path, rgb_data) -> None:
    model = tmp_path / "ln.h5"
    _with_rejected_layers(model)
    with pytest.raises(ConvertError) as exc:
        convert(model, output=tmp_path / "i16.tflite", data=rgb_data[0], quantize_mode="int16x8")
    assert "int16x8" in exc.value.what and "SIGABRT" in exc.value.what
    assert "--quantize" in exc.value.fix
    # The same model in int8 converts in this very process afterwards.
    rep = convert(model, output=tmp_path / "i8.tflite", data=rgb_data[0])
    assert rep["quantization"]["mode"] == "int8" and rep["metrics"]["tflite_accuracy"] is not None


@pytest.mark.slow
def test_keras_applications_mobilenet_v2_prune_qat(tmp_path, rgb_data) -> None:
    from converter import examples

    net = _trained(tmp_path, "mnv2", examples.build_mobilenet_v2(), rgb_data, epochs=6)
    rep = convert(
        net.model,
        output=tmp_path / "pq.tflite",
        data=net.train,
        eval_data=net.test,
        prune=0.5,
        qat=True,
        epochs=2,
    )
    prune = next(s for s in rep["steps"] if s["name"] == "prune")
    assert abs(prune["sparsity"]["achieved"] - 0.5) <= 0.05
    assert rep["metrics"]["accuracy_drop"] <= 1.5, rep["metrics"]
    assert rep["compatibility"]["ai_edge_litert"]["ok"]
