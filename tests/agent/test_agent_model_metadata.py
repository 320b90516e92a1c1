"""A model converted from an image folder tells the agent its label names and input normalization."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.agent import run_agent


@pytest.fixture(scope="module")
def minus_one_to_one_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A digits CNN trained on pixels scaled to [-1, 1] (not the agent's defaults), converted by edge-convert
    from an image folder with class names; and a flat folder of test digits named by their true class."""
    from converter import _tf, examples
    from converter.api import convert

    keras = _tf.keras()
    root = tmp_path_factory.mktemp("meta")
    keras.utils.set_random_seed(0)
    x, y = examples.digits("train")
    model = examples.build_digits_cnn()
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(x * 2.0 - 1.0, y, epochs=15, batch_size=32, verbose=0)
    model.save(root / "pm1.h5")
    folder = root / "train_imgs"
    examples.export_images(folder, per_class=20, size=32, split="train")
    for d in folder.iterdir():
        d.rename(folder / f"digit_{d.name}")
    rep = convert(root / "pm1.h5", output=root / "pm1.tflite", data=folder, normalize="-1-1")
    assert rep["metadata"]["input"]["mean"] == 127.5 and rep["metadata"]["labels"][0] == "digit_0"
    test = root / "test_imgs"
    examples.export_images(test, per_class=2, size=32, split="test", by_class=False)
    return root / "pm1.tflite", test


def _predictions(
    mosquitto, capture, tmp_path: Path, model: Path, source: Path, *extra: str
) -> dict[str, dict]:
    sub = capture("edge/m/predictions")
    sub.subscribed.wait(10)
    # A state directory per run: the agent remembers the files it has done.
    state = tmp_path / f"state{len(list(tmp_path.glob('state*')))}"
    r = run_agent(mosquitto, "m", state, "--model", model, "--source", source, "--once", *extra)
    assert r.returncode == 0, r.stderr
    n = len(list(source.glob("*.png")))
    sub.wait(lambda s: len(s.messages) >= n, 30, f"{n} predictions")
    preds = {p["source"]: p for p in sub.json("edge/m/predictions")}
    sub.close()
    return preds


def test_agent_publishes_label_names_and_normalizes_as_the_model_says(
    minus_one_to_one_model, mosquitto, capture, tmp_path
) -> None:
    model, test = minus_one_to_one_model
    plain = _predictions(mosquitto, capture, tmp_path, model, test)  # no --labels, no --input-mean/std
    assert len(plain) == 20
    right = 0
    for name, p in plain.items():
        top = p["top_k"][0]
        assert top["label"] == f"digit_{top['index']}"  # names from the model, never null
        right += top["index"] == int(name[len("digit")])
    assert right >= 17, f"{right}/20 right: normalization not taken from the model?"
    # The model's normalization is what explicit flags give; the agent's defaults would differ.
    flags = _predictions(
        mosquitto, capture, tmp_path, model, test, "--input-mean", "127.5", "--input-std", "127.5"
    )
    assert all(flags[k]["top_k"][0] == plain[k]["top_k"][0] for k in plain)
    wrong = _predictions(mosquitto, capture, tmp_path, model, test, "--input-mean", "0", "--input-std", "255")
    assert any(wrong[k]["top_k"][0]["score"] != plain[k]["top_k"][0]["score"] for k in plain)


def test_agent_refuses_a_labels_file_naming_fewer_classes(
    minus_one_to_one_model, mosquitto, tmp_path
) -> None:
    model, test = minus_one_to_one_model
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    r = run_agent(
        mosquitto, "m", tmp_path / "state", "--model", model, "--source", test, "--once", "--labels", labels
    )
    assert r.returncode == 2, r.stderr
    assert "names 2 of the model's 10 classes" in r.stderr and "fix:" in r.stderr
