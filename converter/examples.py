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


def _fit_and_save(model: Any, train: Any, test: Any, path: str | Path, epochs: int) -> dict[str, Any]:
    """Compile, train and save ``model`` the way every example is; return {path, test_accuracy, ...}."""
    from converter import _tf

    keras = _tf.keras()
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(*train, epochs=epochs, batch_size=32, verbose=0)
    acc = float(model.evaluate(*test, verbose=0)[1])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return {"path": str(path), "test_accuracy": acc, "epochs": epochs, "model": model}


def train_digits_cnn(path: str | Path, *, epochs: int = 15, seed: int = 0) -> dict[str, Any]:
    """Train on the train split, save as .h5 (or .keras by suffix); return {path, test_accuracy, ...}."""
    from converter import _tf

    tf, keras = _tf.tf(), _tf.keras()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    x, y = digits("train", seed)
    xt, yt = digits("test", seed)
    model = build_digits_cnn()
    return _fit_and_save(model, (x, y), (xt, yt), path, epochs)


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
    return _fit_and_save(model, (x, y), (xt, yt), path, epochs)


def export_rgb_npz(path: str | Path, split: str = "all", size: int = 32, seed: int = 0) -> Path:
    x, y = digits_rgb(split, size, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path


def build_onnx_twin() -> Any:
    from converter import _tf

    keras = _tf.keras()
    return keras.Sequential(
        [
            keras.layers.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, name="logits"),
            keras.layers.Softmax(name="probs"),
        ]
    )


def to_onnx(model: Any, path: Path) -> Path:
    """The tf-keras digits CNN written as an NCHW ONNX graph (helper API): PyTorch's layout, no PyTorch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, b1 = model.get_layer("conv1").get_weights()
    w2, b2 = model.get_layer("conv2").get_weights()
    wd, bd = model.get_layer("logits").get_weights()
    inits = [
        numpy_helper.from_array(a.astype(np.float32), n)
        for a, n in [
            (w1.transpose(3, 2, 0, 1), "w1"),
            (b1, "b1"),
            (w2.transpose(3, 2, 0, 1), "w2"),
            (b2, "b2"),
            (wd, "wd"),
            (bd, "bd"),
        ]
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wd", "bd"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_nchw",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edge-ml-tests"
    )
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def digits_onnx(root: Path, epochs: int = 15) -> tuple[Path, Path, Path]:
    """(model.onnx taking NCHW (1, 1, 8, 8), train.npz, test.npz with x in NCHW as PyTorch users hold it)."""
    from converter import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    x, y = digits("train")
    model = build_onnx_twin()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    root = Path(root)
    for split in ("train", "test"):
        xs, ys = digits(split)
        np.savez(root / f"{split}_nchw.npz", x=xs.transpose(0, 3, 1, 2), y=ys)
    return to_onnx(model, root / "digits.onnx"), root / "train_nchw.npz", root / "test_nchw.npz"


KERAS3_TRAIN = r"""
import sys
from converter import examples
examples.train_keras3_digits(sys.argv[1], kind=sys.argv[2])
"""


def train_keras3_digits(path: str | Path, *, kind: str = "good", epochs: int = 15) -> Path:
    """A Keras 3 functional CNN with BatchNormalization, trained and saved as Keras 3 does.

    ``kind="odd"`` adds RMSNormalization, which tf-keras has no twin of. Run it in a Python without
    TF_USE_LEGACY_KERAS, as a Keras 3 user would (see :data:`KERAS3_TRAIN`).
    """
    import keras

    keras.utils.set_random_seed(0)  # before the layers exist: their initial weights are drawn from it
    x, y = digits("train")
    inp = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", name="conv1")(inp)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    if kind == "odd":
        h = keras.layers.RMSNormalization(name="rms")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    h = keras.layers.Dropout(0.1, name="drop")(h)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="probs")(h))
    # No "accuracy" metric: Keras 3.15 with TF 2.21 fails promoting its string dtype.
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs if kind == "good" else 1, batch_size=32, verbose=0)
    model.save(path)
    return Path(path)


def keras_to_onnx(model: Any, path: Path) -> Path:
    """A tf-keras CNN written as an NCHW ONNX graph (helper API), the way ``torch.onnx.export`` writes one.

    Covers the layers of Keras's MobileNetV2 and of small ResNets: Conv2D, DepthwiseConv2D,
    BatchNormalization (folded into the convolution before it, as PyTorch's export does in eval mode),
    ReLU/ReLU6, ZeroPadding2D (folded into the next convolution's pads), Add, GlobalAveragePooling2D,
    Dense (+softmax). Batch 1, static shapes. Made for benchmarks: no PyTorch, no downloads.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from converter import _tf

    layers_mod = _tf.keras().layers
    nodes: list[Any] = []
    inits: list[Any] = []
    tensor: dict[str, str] = {}  # keras layer name -> ONNX tensor holding its output
    pads_of: dict[str, tuple[str, list[int]]] = {}  # ZeroPadding2D name -> (its input tensor, pads)
    convs: dict[str, dict[str, Any]] = {}  # conv layer name -> its node's weights (BN folded in later)

    def const(name: str, value: Any, dtype: Any = np.float32) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def inbound(layer: Any) -> list[str]:
        src = layer._inbound_nodes[0].inbound_layers
        return [s.name for s in (src if isinstance(src, list) else [src])]

    for layer in model.layers:
        name = layer.name
        if isinstance(layer, layers_mod.InputLayer):
            _, h, w, c = layer.output.shape
            graph_input = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, h, w])
            tensor[name] = "input"
            continue
        srcs = inbound(layer)
        if isinstance(layer, (layers_mod.Conv2D, layers_mod.DepthwiseConv2D)):
            src, extra = pads_of[srcs[0]] if srcs[0] in pads_of else (tensor[srcs[0]], [0, 0, 0, 0])
            weights = layer.get_weights()
            k = weights[0]
            if isinstance(layer, layers_mod.DepthwiseConv2D):
                group = k.shape[2]
                k = k.transpose(2, 3, 0, 1).reshape(k.shape[2] * k.shape[3], 1, k.shape[0], k.shape[1])
            else:
                group = 1
                k = k.transpose(3, 2, 0, 1)
            bias = weights[1] if len(weights) > 1 else np.zeros(k.shape[0], np.float32)
            pads = [0, 0, 0, 0]  # top, left, bottom, right
            if layer.padding == "same":  # TF puts the odd pixel after
                for axis in (0, 1):
                    size, kk, s = layer.input.shape[1 + axis], layer.kernel_size[axis], layer.strides[axis]
                    total = max((-(-size // s) - 1) * s + kk - size, 0)
                    pads[axis], pads[axis + 2] = total // 2, total - total // 2
            convs[name] = {"w": k.astype(np.float32), "b": bias.astype(np.float32)}
            node = helper.make_node(
                "Conv",
                [src, f"{name}_w", f"{name}_b"],
                [name],
                pads=[p + e for p, e in zip(pads, extra, strict=True)],
                strides=list(layer.strides),
                group=group,
                kernel_shape=list(layer.kernel_size),
            )
            nodes.append(node)
            tensor[name] = name
            if layer.activation is not None and layer.activation.__name__ != "linear":
                raise ValueError(f"{name}: fused activation {layer.activation.__name__} is not exported")
        elif isinstance(layer, layers_mod.BatchNormalization):
            if srcs[0] not in convs:
                raise ValueError(f"{name}: BatchNormalization not after a convolution is not exported")
            gamma, beta, mean, var = layer.get_weights()
            scale = gamma / np.sqrt(var + layer.epsilon)
            conv = convs[srcs[0]]
            conv["w"] = conv["w"] * scale[:, None, None, None]
            conv["b"] = (conv["b"] - mean) * scale + beta
            tensor[name] = tensor[srcs[0]]
        elif isinstance(layer, layers_mod.ZeroPadding2D):
            (t, b), (left, r) = layer.padding
            pads_of[name] = (tensor[srcs[0]], [t, left, b, r])
        elif isinstance(layer, layers_mod.ReLU):
            if layer.max_value is None:
                nodes.append(helper.make_node("Relu", [tensor[srcs[0]]], [name]))
            else:
                lo, hi = const(f"{name}_min", 0.0), const(f"{name}_max", float(layer.max_value))
                nodes.append(helper.make_node("Clip", [tensor[srcs[0]], lo, hi], [name]))
            tensor[name] = name
        elif isinstance(layer, layers_mod.Add):
            nodes.append(helper.make_node("Add", [tensor[s] for s in srcs], [name]))
            tensor[name] = name
        elif isinstance(layer, layers_mod.GlobalAveragePooling2D):
            nodes.append(helper.make_node("GlobalAveragePool", [tensor[srcs[0]]], [f"{name}_4d"]))
            nodes.append(helper.make_node("Flatten", [f"{name}_4d"], [name], axis=1))
            tensor[name] = name
        elif isinstance(layer, layers_mod.Dense):
            wd, bd = layer.get_weights()
            act = layer.activation.__name__
            out = f"{name}_logits" if act == "softmax" else name
            inputs = [tensor[srcs[0]], const(f"{name}_w", wd), const(f"{name}_b", bd)]
            nodes.append(helper.make_node("Gemm", inputs, [out]))
            if act == "softmax":
                nodes.append(helper.make_node("Softmax", [out], [name], axis=1))
            elif act != "linear":
                raise ValueError(f"{name}: Dense activation {act} is not exported")
            tensor[name] = name
        else:
            raise ValueError(f"{name}: {type(layer).__name__} is not exported")
    for name, conv in convs.items():
        const(f"{name}_w", conv["w"])
        const(f"{name}_b", conv["b"])
    last = model.layers[-1].name
    graph = helper.make_graph(
        nodes,
        model.name,
        [graph_input],
        [
            helper.make_tensor_value_info(
                tensor[last], TensorProto.FLOAT, [1, int(model.outputs[0].shape[-1])]
            )
        ],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edge-ml")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return Path(path)
