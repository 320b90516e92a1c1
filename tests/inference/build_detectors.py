"""Build tiny detectors whose outputs are known by construction (TensorFlow: run in a subprocess).

    python build_detectors.py JOB [JOB ...]     (one TensorFlow start-up for all of them)
    JOB = head,HEAD.npy,OUT.tflite,SIZE,{float,int8}  or  ssd,SCORES.npy,ANCHORS.npy,OUT.tflite,SIZE
          or  outputs,OUT.tflite,SIZE,A.npy[,B.npy ...]

``head``: a model whose single output is the given array (a raw YOLO head): a dense layer with a
near-zero kernel over the pooled image and the head as its bias, so the converter and the runtime
lay out (and, for int8, quantize) a real tensor of that shape. ``ssd``: box encodings all zero (so
each box is its anchor), the given class scores [N, C+1] (column 0 = background), and TensorFlow's
``TFLite_Detection_PostProcess`` op fused by the converter, as the Object Detection API exports it.
``outputs``: the same trick for several outputs (a YOLO-seg head and its mask prototypes, PoseNet's
heatmaps, offsets and displacements).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _pooled_dense(inp: tf.Tensor, values: np.ndarray) -> tf.Tensor:
    pooled = tf.keras.layers.GlobalAveragePooling2D()(inp)
    rng = np.random.default_rng(0)
    kernel = rng.uniform(-1e-4, 1e-4, size=(3, values.size)).astype(np.float32)
    dense = tf.keras.layers.Dense(values.size, weights=[kernel, values.reshape(-1).astype(np.float32)])
    return tf.keras.layers.Reshape(values.shape[1:])(dense(pooled))


def build_head(head: np.ndarray, out: str, size: int, kind: str) -> None:
    inp = tf.keras.Input((size, size, 3))
    model = tf.keras.Model(inp, _pooled_dense(inp, head))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind == "int8":
        rng = np.random.default_rng(1)

        def rep():  # noqa: ANN202
            for _ in range(8):
                yield [rng.uniform(0, 1, (1, size, size, 3)).astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.int8
    with open(out, "wb") as f:
        f.write(conv.convert())


def build_outputs(arrays: list[np.ndarray], out: str, size: int) -> None:
    """A float model whose outputs are the given arrays (the converter may list them in another order)."""
    inp = tf.keras.Input((size, size, 3))
    model = tf.keras.Model(inp, [_pooled_dense(inp, a) for a in arrays])
    with open(out, "wb") as f:
        f.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def _nms_signature(num_classes: int, max_detections: int) -> str:
    attrs = {
        "max_detections": ("i", max_detections),
        "max_classes_per_detection": ("i", 1),
        "detections_per_class": ("i", max_detections),
        "use_regular_nms": ("b", "false"),
        "nms_score_threshold": ("f", 0.3),
        "nms_iou_threshold": ("f", 0.5),
        "y_scale": ("f", 10.0),
        "x_scale": ("f", 10.0),
        "h_scale": ("f", 5.0),
        "w_scale": ("f", 5.0),
        "num_classes": ("i", num_classes),
    }
    parts = ['name: "TFLite_Detection_PostProcess"']
    parts += [f'attr {{ key: "{k}" value {{ {t}: {v} }} }}' for k, (t, v) in attrs.items()]
    return " ".join(parts)


def build_ssd(logits: np.ndarray, anchors: np.ndarray, out: str, size: int) -> None:
    n, c1 = logits.shape
    inp = tf.keras.Input((size, size, 3), batch_size=1)
    scores = _pooled_dense(inp, logits[None])
    encodings = _pooled_dense(inp, np.zeros((1, n, 4), np.float32))
    net = tf.keras.Model(inp, [encodings, scores])
    anchor_t = tf.constant(anchors.astype(np.float32))

    @tf.function(experimental_implements=_nms_signature(c1 - 1, 10))
    def postprocess(box_encodings, class_predictions, anchors):  # noqa: ANN001, ANN202
        # A placeholder body: the converter replaces the whole function with the fused op.
        boxes = tf.constant(0.0, dtype=tf.float32, name="boxes")
        scores = tf.constant(0.0, dtype=tf.float32, name="scores")
        classes = tf.constant(0.0, dtype=tf.float32, name="classes")
        num = tf.constant(0.0, dtype=tf.float32, name="num_detections")
        return boxes, classes, scores, num

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
    def serve(image):  # noqa: ANN001, ANN202
        enc, sc = net(image)
        return postprocess(enc, sc, anchor_t)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], net)
    conv.allow_custom_ops = True
    with open(out, "wb") as f:
        f.write(conv.convert())


if __name__ == "__main__":
    for job in sys.argv[1:]:
        what, *args = job.split(",")
        if what == "head":
            build_head(np.load(args[0]), args[1], int(args[2]), args[3])
        elif what == "outputs":
            build_outputs([np.load(a) for a in args[2:]], args[0], int(args[1]))
        elif what == "ssd":
            build_ssd(np.load(args[0]), np.load(args[1]), args[2], int(args[3]))
        else:
            raise SystemExit(f"unknown model kind {what!r}")
