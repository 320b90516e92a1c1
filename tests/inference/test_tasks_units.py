"""Task selection and the decoders' edge cases on hand-made arrays (the real-model tests cover the rest)."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest

from edge.errors import InputError
from edge.inference.tasks import detect, embedding, pose, segment, select
from edge.inference.tasks.geometry import Geometry


@dataclass(frozen=True)
class Spec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


def specs(*shapes: tuple[int, ...], dtype: type = np.float32, names: tuple[str, ...] = ()) -> list[Spec]:
    return [Spec(names[i] if names else f"out{i}", s, np.dtype(dtype)) for i, s in enumerate(shapes)]


@pytest.mark.parametrize(
    ("outputs", "kw", "task", "decoder"),
    [
        (specs((1, 1001), dtype=np.uint8), {}, "classifier", "top_k"),
        (specs((1, 84, 8400)), {}, "detector", "yolo_v8"),
        (specs((1, 25200, 85), dtype=np.int8), {}, "detector", "yolo_v5"),
        (specs((1, 56, 8400)), {}, "pose", "yolo_pose"),
        (specs((1, 56, 8400)), {"num_labels": 52}, "detector", "yolo_v8"),
        (specs((1, 6, 56)), {}, "pose", "movenet_multi"),
        (specs((1, 9, 9, 17), (1, 9, 9, 34), (1, 9, 9, 32), (1, 9, 9, 32)), {}, "pose", "posenet"),
        (specs((1, 10, 4), (1, 10), (1, 10), (1,)), {}, "detector", "ssd_postprocess"),
        (specs((1, 257, 257, 21)), {"input_hw": (257, 257)}, "segmentation", "class_scores"),
        (specs((1, 7, 7, 1280)), {"input_hw": (224, 224)}, "embedding", "embedding"),
        (specs((1, 1, 1, 1280)), {}, "embedding", "embedding"),
        (specs((1, 128), names=("face_embedding",)), {}, "embedding", "embedding"),
        (specs((1, 3), (1, 5)), {}, "generic", "generic"),
    ],
)
def test_choose_reads_the_task_from_the_signature(
    outputs: list[Spec], kw: dict, task: str, decoder: str
) -> None:
    choice = select.choose(outputs, **kw)
    assert (choice.task, choice.decoder) == (task, decoder), choice.reason
    assert choice.reason.startswith("auto: ") and len(choice.reason) > 20


def test_explicit_task_overrides_or_explains() -> None:
    out = specs((1, 1001))
    assert select.choose(out, "embedding").as_dict() == {
        "task": "embedding",
        "decoder": "embedding",
        "requested": "embedding",
        "reason": "--task embedding: one output [1, 1001] read as a vector",
    }
    with pytest.raises(InputError) as err:
        select.choose(out, "detector")
    assert "[1, 1001]" in err.value.what and "it fits: classifier, embedding, generic" in err.value.what
    assert "raw YOLO head" in err.value.fix
    with pytest.raises(InputError, match="--task must be one of"):
        select.choose(out, "boxes")


def test_ultralytics_metadata_names_the_task_and_labels() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metadata.json", '{"task": "pose", "names": {"0": "person"}, "imgsz": [640, 640]}')
    model = b"TFL3" + bytes(100) + buf.getvalue()  # the exporter appends the zip to the flatbuffer
    meta = select.ultralytics_metadata(model)
    assert meta is not None and meta["task"] == "pose"
    assert select.metadata_labels(meta) == {0: "person"}
    choice = select.choose(specs((1, 56, 8400)), metadata=meta)
    assert choice.decoder == "yolo_pose" and "metadata" in choice.reason
    assert select.ultralytics_metadata(b"TFL3" + bytes(100)) is None


def test_nms_is_class_aware_and_capped() -> None:
    boxes = np.array([[0, 0, 1, 1], [0, 0, 0.98, 1], [0, 0, 1, 1], [2, 2, 3, 3]], np.float32)
    found = detect.Boxes(boxes, np.array([0.9, 0.8, 0.7, 0.6], np.float32), np.array([0, 0, 1, 0]))
    assert detect.nms_indices(found, 0.5, 10).tolist() == [0, 2, 3]
    assert detect.nms_indices(found, 0.5, 2).tolist() == [0, 2]
    assert detect.nms_indices(found, 0.99, 10).tolist() == [0, 1, 2, 3]
    assert len(detect.nms(detect.Boxes(boxes[:0], boxes[:0, 0], np.zeros(0, int)), 0.5, 10)) == 0


def test_yolo_pixels_without_input_size_is_an_actionable_error() -> None:
    head = np.zeros((1, 6, 100), np.float32)
    head[0, :, 0] = [320, 320, 50, 50, 0.9, 0.1]
    with pytest.raises(InputError, match="pixels") as err:
        detect.decode_yolo(head)
    assert "input_size" in err.value.fix
    found = detect.decode_yolo(head, input_size=(640, 640))
    np.testing.assert_allclose(found.boxes[0], [0.4609375, 0.4609375, 0.5390625, 0.5390625])
    with pytest.raises(InputError, match="YOLO head"):
        detect.decode_yolo(np.zeros((1, 3, 100), np.float32))


def test_uint8_head_thresholds_in_the_quantized_domain() -> None:
    # uint8 with a zero point: raw 128 is 0.0; argsort/threshold must not wrap around
    scale, zp = 1 / 127, 128
    head = np.full((1, 6, 50), zp, np.uint8)
    head[0, :4, 7] = np.round(np.array([0.5, 0.5, 0.2, 0.2]) / scale + zp).astype(np.uint8)
    head[0, 5, 7] = 255  # class 1, score 1.0
    head[0, 4, 9] = 190  # class 0 at ~0.49: under 0.5
    found = detect.decode_yolo(head, threshold=0.5, scale=scale, zero_point=zp)
    assert found.classes.tolist() == [1] and found.scores[0] == pytest.approx(1.0, abs=0.01)


def test_movenet_multi_and_posenet_and_yolo_pose() -> None:
    rows = np.zeros((1, 6, 56), np.float32)
    rows[0, 1, :51] = np.tile([0.5, 0.25, 0.9], 17)
    rows[0, 1, 51:55] = [0.1, 0.1, 0.9, 0.4]
    rows[0, 1, 55] = 0.8
    rows[0, 3, 55] = 0.1  # under the threshold
    poses = pose.movenet_multi(rows, threshold=0.2)
    assert len(poses) == 1 and poses[0].score == pytest.approx(0.8)
    assert poses[0].keypoints[16].as_dict() == {"name": "right_ankle", "x": 0.25, "y": 0.5, "score": 0.9}
    assert poses[0].as_dict()["box"] == pytest.approx([0.1, 0.1, 0.9, 0.4])

    hm = np.full((1, 9, 9, 17), -5.0, np.float32)
    hm[0, 4, 2, :] = 3.0  # every keypoint peaks at row 4, column 2
    off = np.zeros((1, 9, 9, 34), np.float32)
    off[0, 4, 2, :17], off[0, 4, 2, 17:] = 7.0, -5.0  # pixels
    p = pose.posenet(hm, off, (257, 257))
    assert p.keypoints[0].y == pytest.approx((4 / 8 * 257 + 7) / 257)
    assert p.keypoints[0].x == pytest.approx((2 / 8 * 257 - 5) / 257)
    assert p.keypoints[0].score == pytest.approx(1 / (1 + np.exp(-3.0)))

    head = np.zeros((1, 56, 30), np.float32)
    for col, (cx, s) in enumerate([(100, 0.9), (102, 0.8), (400, 0.7)]):
        head[0, :5, col] = [cx, 200, 80, 160, s]
        head[0, 5::3, col], head[0, 6::3, col], head[0, 7::3, col] = cx, 200, 0.95
    ps = pose.yolo_pose(head, threshold=0.5, input_size=(640, 640))
    assert [round(q.score, 2) for q in ps] == [0.9, 0.7]  # the near-duplicate is suppressed
    assert ps[1].keypoints[0].x == pytest.approx(400 / 640) and ps[1].keypoints[0].y == pytest.approx(
        200 / 640
    )


def test_segment_scores_and_bad_maps() -> None:
    logits = np.zeros((1, 4, 4, 3), np.float32)
    logits[0, :, :1, 2] = 5.0  # class 2 in the first column: 25 %
    logits[0, :, 1:, 0] = 1.0
    segs = segment.segments(segment.class_map(logits), {0: "background", 2: "cat"})
    assert [s.as_dict() for s in segs] == [
        {"index": 0, "label": "background", "fraction": 0.75},
        {"index": 2, "label": "cat", "fraction": 0.25},
    ]
    with pytest.raises(InputError):
        segment.class_map(np.zeros((2, 2, 2, 2, 2)))


def test_embedding_preview_and_full() -> None:
    vec = np.arange(20, dtype=np.float32)
    e = embedding.embedding(vec[None])
    assert e.dim == 20 and len(e.values) == embedding.PREVIEW and e.as_dict()["truncated"] is True
    assert e.norm == pytest.approx(float(np.linalg.norm(vec)))
    assert embedding.embedding(vec, full=True).as_dict()["truncated"] is False


def test_geometry_refuses_unknown_modes() -> None:
    with pytest.raises(InputError, match="--resize"):
        Geometry.plan((10, 10), (5, 5), "crop")


def test_ssd_outputs_in_pixels_and_ties_broken_by_name() -> None:
    # an EfficientDet-Lite export in the TF2 order (scores, boxes, count, classes), boxes in input pixels
    scores = np.array([[0.9, 0.2, 0.0]], np.float32)
    boxes = np.array([[[32, 64, 160, 192], [0, 0, 10, 10], [0, 0, 0, 0]]], np.float32)
    count = np.array([2.0], np.float32)
    classes = np.array([[17.0, 3.0, 0.0]], np.float32)
    found = detect.decode_ssd([scores, boxes, count, classes], threshold=0.5, input_size=(320, 320))
    assert found.classes.tolist() == [17]
    np.testing.assert_allclose(found.boxes[0], [0.1, 0.2, 0.5, 0.6])
    # all-whole scores (0/1) and classes in [0, 1]: the tensor names decide
    ones = np.array([[1.0, 0.0]], np.float32)
    zeros = np.array([[0.0, 1.0]], np.float32)
    names = ["boxes", "detection_scores", "detection_classes", "num"]
    b, c, s, n = detect.ssd_outputs([np.zeros((1, 2, 4)), ones, zeros, np.array([2.0])], names)
    assert (c, s) == (2, 1)
