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


def digits_rgb(split: str = "all", size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The digits as size x size RGB in [0, 1]: an input the Keras-applications CNNs accept (>= 32 px)."""
    x, y = digits(split, seed)
    reps = -(-size // 8)
    big = np.kron(x[..., 0], np.ones((reps, reps), np.float32))[:, :size, :size]
    return np.repeat(big[..., None], 3, axis=-1).astype(np.float32), y


def build_mobilenet_v2(size: int = 32, alpha: float = 0.35, classes: int = 10) -> Any:
    """Keras's own MobileNetV2 (no weights: nothing is downloaded), as a new user would take it."""
    from converter import _tf

    keras = _tf.keras()
    model = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=alpha, weights=None, classes=classes
    )
    # Keras-applications BN keeps 0.999 momentum (made for ImageNet-length runs); a few hundred steps on
    # small data would leave the moving statistics near their initial values, so follow faster.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


def build_resnet(size: int = 32, classes: int = 10, width: int = 16) -> Any:
    """A small ResNet-style model: Conv-BN-ReLU stem, two residual blocks (one projecting), GAP, Dense."""
    from converter import _tf

    keras = _tf.keras()
    layers = keras.layers

    def conv_bn(x: Any, filters: int, stride: int, name: str, relu: bool = True) -> Any:
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x) if relu else x

    inp = keras.Input((size, size, 3), name="image")
    x = conv_bn(inp, width, 1, "stem")
    y = conv_bn(conv_bn(x, width, 1, "b1a"), width, 1, "b1b", relu=False)
    x = layers.ReLU(name="b1_out")(layers.Add(name="b1_add")([x, y]))
    y = conv_bn(conv_bn(x, 2 * width, 2, "b2a"), 2 * width, 1, "b2b", relu=False)
    shortcut = layers.Conv2D(2 * width, 1, strides=2, use_bias=False, name="b2_proj_conv")(x)
    shortcut = layers.BatchNormalization(momentum=0.9, name="b2_proj_bn")(shortcut)
    x = layers.ReLU(name="b2_out")(layers.Add(name="b2_add")([shortcut, y]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, layers.Dense(classes, activation="softmax", name="probs")(x), name="resnet_small")


def train_rgb_cnn(
    model: Any, path: str | Path, *, epochs: int = 8, size: int = 32, seed: int = 0
) -> dict[str, Any]:
    """Train ``model`` on the RGB digits train split and save it; return {path, test_accuracy, ...}."""
    from converter import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(seed)
    x, y = digits_rgb("train", size, seed)
    xt, yt = digits_rgb("test", size, seed)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    acc = float(model.evaluate(xt, yt, verbose=0)[1])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return {"path": str(path), "test_accuracy": acc, "epochs": epochs, "model": model}


def export_rgb_npz(path: str | Path, split: str = "all", size: int = 32, seed: int = 0) -> Path:
    x, y = digits_rgb(split, size, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path
