"""ONNX test models built with onnx's helper API (no PyTorch): a digits CNN in PyTorch's NCHW layout.

The weights come from a tf-keras CNN trained on the digits, transcribed to ONNX's OIHW convolutions, so
the ONNX model classifies for real and accuracy figures mean something.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build_keras_twin() -> object:
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


def to_onnx(model: object, path: Path) -> Path:
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
    from converter import _tf, examples

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    x, y = examples.digits("train")
    model = build_keras_twin()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    root = Path(root)
    for split in ("train", "test"):
        xs, ys = examples.digits(split)
        np.savez(root / f"{split}_nchw.npz", x=xs.transpose(0, 3, 1, 2), y=ys)
    return to_onnx(model, root / "digits.onnx"), root / "train_nchw.npz", root / "test_nchw.npz"
