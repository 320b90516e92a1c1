"""Detectors built here with TensorFlow's converter, run by the real runtime, decoded by
edge.inference.tasks.detect: raw YOLO heads in both layouts (float with pixel boxes, int8 with
normalized boxes) and an SSD head through the converter's TFLite_Detection_PostProcess op.
Each model outputs what it was built to output; the decoded boxes must match it (IoU >= 0.9)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge.errors import InputError
from edge.inference.preprocess import dequantize
from edge.inference.tasks import detect, select
from edge.inference.tasks.geometry import Geometry
from tests.inference.runtime_helpers import load, run
from tests.support.process import subprocess_env

SIZE = 320  # model input, square
ANCHORS = 2100  # YOLOv8's count at 320x320
IMAGE = (640, 480)  # the "camera" picture, letterboxed into the input
LABELS = {0: "person", 1: "dog", 2: "cat"}
# Objects on the original picture, in its pixels (x0, y0, x1, y1), with their class and score.
OBJECTS = [((100, 80, 300, 400), 0, 0.92), ((350, 50, 600, 200), 2, 0.81), ((350, 50, 600, 200), 1, 0.66)]
THRESHOLD = 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (ymin, xmin, ymax, xmax) boxes."""
    h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = h * w
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def expected() -> list[tuple[int, np.ndarray]]:
    w, h = IMAGE
    return [(c, np.array([y0 / h, x0 / w, y1 / h, x1 / w])) for (x0, y0, x1, y1), c, _ in OBJECTS]


def yolo_head(layout: str, pixels: bool, seed: int = 0) -> np.ndarray:
    """A YOLO head that holds OBJECTS (letterboxed), each with near-duplicate anchors the NMS must
    drop, a lone box under the threshold, and background anchors with low scores."""
    rng = np.random.default_rng(seed)
    geo = Geometry.plan(IMAGE, (SIZE, SIZE), "letterbox")
    left, top, cw, ch = geo.content
    f = cw / IMAGE[0]
    c = len(LABELS)
    xywh = np.tile([0.5, 0.5, 0.05, 0.05], (ANCHORS, 1)).astype(np.float32) * SIZE
    xywh[:, :2] = rng.uniform(0, SIZE, (ANCHORS, 2))
    cls = rng.uniform(0.0, 0.2, (ANCHORS, c)).astype(np.float32)  # background: all classes unlikely
    obj = rng.uniform(0.0, 0.3, ANCHORS).astype(np.float32)
    row = 0
    for (x0, y0, x1, y1), k, score in OBJECTS:
        box = np.array([(x0 + x1) / 2 * f + left, (y0 + y1) / 2 * f + top, (x1 - x0) * f, (y1 - y0) * f])
        for dup, s in enumerate((score, score - 0.1, score - 0.15, score - 0.2)):
            xywh[row] = box + (rng.uniform(-3, 3, 4) if dup else 0)  # duplicates overlap by IoU > 0.9
            cls[row] = 0.05
            cls[row, k] = s
            obj[row] = 1.0
            row += 1
    xywh[row] = [60, 60, 40, 40]  # alone, under the threshold
    cls[row, 1], obj[row] = THRESHOLD - 0.15, 1.0
    if not pixels:
        xywh /= SIZE
    if layout == "v8":
        return np.concatenate([xywh, cls], axis=1).T[None].astype(np.float32)  # [1, 4+C, N]
    return np.concatenate([xywh, obj[:, None], cls], axis=1)[None].astype(np.float32)  # [1, N, 5+C]


SSD_BOXES = np.array([[0.1, 0.2, 0.5, 0.6], [0.55, 0.05, 0.95, 0.45]])  # ymin, xmin, ymax, xmax


def ssd_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Class scores [N, 1+C] (column 0 = background) and anchors [N, 4] (yc, xc, h, w): two objects, a
    near-duplicate of the first (the op's NMS drops it) and 40 background anchors."""
    rng = np.random.default_rng(3)
    n = 44
    anchors = np.column_stack([rng.uniform(0.2, 0.8, (n, 2)), np.full((n, 2), 0.1)])
    scores = np.full((n, 1 + len(LABELS)), 0.01)
    for i, (b, k, s) in enumerate(zip(SSD_BOXES, (0, 2), (0.9, 0.75))):
        anchors[i] = [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]]
        scores[i, 1 + k] = s
    anchors[2] = anchors[0] + [0.005, 0.005, 0, 0]
    scores[2, 1] = 0.6
    return scores.astype(np.float32), anchors.astype(np.float32)


@dataclass(frozen=True)
class Built:
    yolo: dict[str, Path]  # "v8-float" -> .tflite
    ssd: Path


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("detectors")
    jobs, yolo = [], {}
    for layout in ("v8", "v5"):
        for kind in ("float", "int8"):
            name = f"{layout}-{kind}"
            np.save(root / f"{name}.npy", yolo_head(layout, pixels=kind == "float"))
            yolo[name] = root / f"yolo{name}.tflite"
            jobs.append(f"head,{root / f'{name}.npy'},{yolo[name]},{SIZE},{kind}")
    scores, anchors = ssd_inputs()
    np.save(root / "scores.npy", scores)
    np.save(root / "anchors.npy", anchors)
    jobs.append(f"ssd,{root / 'scores.npy'},{root / 'anchors.npy'},{root / 'ssd.tflite'},{SIZE}")
    builder = Path(__file__).with_name("build_detectors.py")
    proc = subprocess.run(
        [sys.executable, str(builder), *jobs],
        capture_output=True,
        text=True,
        timeout=600,
        env=subprocess_env(TF_USE_LEGACY_KERAS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Built(yolo, root / "ssd.tflite")


def invoke(path: Path) -> tuple[object, list[np.ndarray]]:
    model = load(path)
    spec = model.inputs[0]
    tensor = np.full(spec.shape, 100 if spec.dtype == np.uint8 else 0.4, dtype=spec.dtype)
    return model, run(model, tensor)


@pytest.mark.parametrize("name", ["v8-float", "v8-int8", "v5-float", "v5-int8"])
def test_yolo_heads_decode_to_the_objects_on_the_original_image(built: Built, name: str) -> None:
    model, (raw,) = invoke(built.yolo[name])
    spec = model.outputs[0]  # type: ignore[attr-defined]
    layout = name.split("-")[0]
    assert (spec.dtype == np.int8) == name.endswith("int8")
    choice = select.choose(model.outputs, num_labels=len(LABELS))  # type: ignore[attr-defined]
    assert (choice.task, choice.decoder) == ("detector", f"yolo_{layout}"), choice
    geo = Geometry.plan(IMAGE, (SIZE, SIZE), "letterbox")
    found = detect.decode_yolo(
        raw,
        threshold=THRESHOLD,
        iou=0.45,
        max_detections=100,
        input_size=(SIZE, SIZE),
        scale=spec.scale,
        zero_point=spec.zero_point,
    )
    dets = detect.to_detections(found, LABELS, geo)
    # near-duplicates suppressed, the same box with another class kept, the weak box dropped
    assert [d.index for d in dets] == [c for c, _ in expected()], dets
    for d, (_, box) in zip(dets, expected()):
        assert iou(np.array(d.box), box) >= 0.9, (d, box)
    assert [round(d.score, 1) for d in dets] == [round(s, 1) for *_, s in OBJECTS]
    assert detect.counts(dets) == {"person": 1, "cat": 1, "dog": 1}
    # the quantized path (threshold on raw int8 values) keeps exactly what the de-quantized one keeps
    real = dequantize(raw, spec)
    again = detect.to_detections(
        detect.decode_yolo(real, threshold=THRESHOLD, input_size=(SIZE, SIZE)), LABELS, geo
    )
    assert [d.index for d in again] == [d.index for d in dets]
    one = detect.decode_yolo(
        raw,
        threshold=THRESHOLD,
        max_detections=1,
        input_size=(SIZE, SIZE),
        scale=spec.scale,
        zero_point=spec.zero_point,
    )
    assert len(one) == 1 and int(one.classes[0]) == 0


def test_class_agnostic_overlap_is_not_suppressed_across_classes(built: Built) -> None:
    _, (raw,) = invoke(built.yolo["v8-float"])
    strict = detect.decode_yolo(raw, threshold=THRESHOLD, iou=0.0, input_size=(SIZE, SIZE))
    # iou=0 drops every overlapping box of the same class, yet cat and dog on the same box both stay
    assert sorted(strict.classes.tolist()) == [0, 1, 2]


def test_ssd_postprocess_op_model(built: Built) -> None:
    model, outs = invoke(built.ssd)
    assert "TFLite_Detection_PostProcess" in model.info.custom_ops  # type: ignore[attr-defined]
    choice = select.choose(model.outputs, custom_ops=model.info.custom_ops)  # type: ignore[attr-defined]
    assert (choice.task, choice.decoder) == ("detector", "ssd_postprocess"), choice
    names = [o.name for o in model.outputs]  # type: ignore[attr-defined]
    found = detect.decode_ssd(outs, names, threshold=0.5, input_size=(SIZE, SIZE))
    dets = detect.to_detections(found, LABELS, Geometry.plan((SIZE, SIZE), (SIZE, SIZE), "stretch"))
    assert [(d.index, d.label) for d in dets] == [(0, "person"), (2, "cat")], dets
    for d, box in zip(dets, SSD_BOXES):
        assert iou(np.array(d.box), box) >= 0.9, (d, box)
    assert dets[0].score == pytest.approx(0.9, abs=1e-3)
    # the exporters' other output order (TF2 / EfficientDet-Lite: scores, boxes, count, classes)
    b, c, s, n = detect.ssd_outputs(outs, names)
    reordered = [outs[s], outs[b], outs[n], outs[c]]
    again = detect.decode_ssd(reordered, threshold=0.5)
    assert again.classes.tolist() == found.classes.tolist()
    np.testing.assert_allclose(again.boxes, found.boxes)


def test_pipeline_letterboxes_a_yolo_model_and_reports_boxes_on_the_image(built: Built) -> None:
    from PIL import Image

    from edge.inference.pipeline import Pipeline, Settings
    from edge.inference.preprocess import Normalization

    pipe = Pipeline(load(built.yolo["v8-int8"]), LABELS, Normalization(), Settings(threshold=THRESHOLD))
    assert pipe.kind == "detector" and pipe.resize == "letterbox"
    assert pipe.describe()["task"]["decoder"] == "yolo_v8"
    res = pipe.run(Image.new("RGB", IMAGE, (90, 120, 30)))
    assert res.result_key == "detections" and res.fields is not None
    assert res.fields["counts"] == {"person": 1, "cat": 1, "dog": 1}
    for d, (_, box) in zip(res.result, expected()):
        assert iou(np.array(d["box"]), box) >= 0.9, (d, box)
    # stretch instead: the same head now lands elsewhere on the picture (the geometry is honoured)
    stretched = Pipeline(
        load(built.yolo["v8-int8"]), LABELS, Normalization(), Settings(threshold=THRESHOLD), resize="stretch"
    ).run(Image.new("RGB", IMAGE))
    assert iou(np.array(stretched.result[0]["box"]), expected()[0][1]) < 0.9
    with pytest.raises(InputError, match="--task pose does not fit"):
        Pipeline(load(built.ssd), LABELS, Normalization(), Settings(), task="pose")
