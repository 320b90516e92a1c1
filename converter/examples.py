"""A small digits CNN and its data (scikit-learn's 8x8 digits): used by tests, the benchmark and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

INPUT_SHAPE = (8, 8, 1)


def digits(split: str = "all", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x float32 (N, 8, 8, 1) in [0, 1], y int64; "train"/"test" is a fixed 80/20 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_train = int(len(x) * 0.8)
    idx = {"all": order, "train": order[:n_train], "test": order[n_train:]}[split]
    return x[idx], y[idx]


def build_digits_cnn() -> Any:
    from converter import _tf

    keras = _tf.keras()
    return keras.Sequential(
        [
            keras.layers.Input(INPUT_SHAPE, name="image"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense1"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ],
        name="digits_cnn",
    )


def train_digits_cnn(path: str | Path, *, epochs: int = 15, seed: int = 0) -> dict[str, Any]:
    """Train on the train split, save as .h5 (or .keras by suffix); return {path, test_accuracy, ...}."""
    from converter import _tf

    tf, keras = _tf.tf(), _tf.keras()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    x, y = digits("train", seed)
    xt, yt = digits("test", seed)
    model = build_digits_cnn()
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    acc = float(model.evaluate(xt, yt, verbose=0)[1])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return {"path": str(path), "test_accuracy": acc, "epochs": epochs, "model": model}


def export_npz(path: str | Path, split: str = "all", seed: int = 0) -> Path:
    x, y = digits(split, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path


def export_images(
    folder: str | Path,
    *,
    per_class: int = 5,
    size: int = 32,
    split: str = "test",
    seed: int = 0,
    by_class: bool = True,
) -> list[Path]:
    """Write digits as size x size grayscale PNGs (FOLDER/<digit>/NNN.png, or flat with by_class=False)."""
    from PIL import Image

    x, y = digits(split, seed)
    folder = Path(folder)
    written = []
    counts: dict[int, int] = {}
    for img, label in zip(x, y):
        n = counts.get(int(label), 0)
        if n >= per_class:
            continue
        counts[int(label)] = n + 1
        pixels = (img[..., 0] * 255).round().astype(np.uint8)
        out_dir = folder / str(label) if by_class else folder
        out_dir.mkdir(parents=True, exist_ok=True)
        p = out_dir / (f"{n:03d}.png" if by_class else f"digit{label}_{n:03d}.png")
        Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.NEAREST).save(p)
        written.append(p)
    return written
