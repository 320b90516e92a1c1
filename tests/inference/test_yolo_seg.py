"""YOLO segmentation (YOLOv8/v11-seg): a head with mask coefficients after the class scores, and mask
prototypes as a second output. Decoded by hand-made arrays and by a tiny model built here with
TensorFlow's converter (run in the real runtime through the pipeline, letterboxed), whose outputs hold
two objects with known masks: an ellipse (a prototype shaped like it) and a full box (a prototype that is
positive everywhere, so the mask is what the box crop leaves)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.inference.pipeline import Pipeline, Settings
from edge.inference.preprocess import Normalization
from edge.inference.tasks import detect, segment, select
from edge.inference.tasks.geometry import Geometry
from tests.inference.runtime_helpers import build_models, load

SIZE = 320  # model input, square
ANCHORS = 2100
M = 32  # mask coefficients / prototypes, as Ultralytics exports
P = SIZE // 4  # prototype resolution
IMAGE = (640, 480)  # letterboxed into the input
LABELS = {0: "person", 1: "dog", 2: "cat"}
PERSON = (100, 80, 300, 400)  # x0, y0, x1, y1 on the image; mask: the ellipse inside the box
CAT = (350, 50, 600, 200)  # mask: the whole box
DECOY = 3.0  # every background anchor's mask coefficients: over the threshold, if read as class scores


def seg_outputs(layout: str = "v8") -> tuple[np.ndarray, np.ndarray]:
    """([1, 4+C+M, N] head in input pixels, [1, P, P, M] prototypes) for PERSON (class 0, 0.9) and CAT
    (class 2, 0.8), each with a near-duplicate anchor the NMS must drop."""
    rng = np.random.default_rng(0)
    geo = Geometry.plan(IMAGE, (SIZE, SIZE), "letterbox")
    left, top, cw, _ = geo.content
    f = cw / IMAGE[0]
    xywh = np.column_stack([rng.uniform(0, SIZE, (ANCHORS, 2)), np.full((ANCHORS, 2), 10.0)])
    cls = rng.uniform(0.0, 0.2, (ANCHORS, len(LABELS)))
    coef = np.full((ANCHORS, M), DECOY)
    protos = np.full((P, P, M), -1.0)
    yy, xx = (np.mgrid[0:P, 0:P] + 0.5) * (SIZE / P)  # prototype pixel centres in input pixels
    row = 0
    for (x0, y0, x1, y1), k, score, plane in ((PERSON, 0, 0.9, 0), (CAT, 2, 0.8, 1)):
        box = np.array([(x0 + x1) / 2 * f + left, (y0 + y1) / 2 * f + top, (x1 - x0) * f, (y1 - y0) * f])
        for s in (score, score - 0.1):
            xywh[row], cls[row] = box, 0.05
            cls[row, k] = s
            coef[row] = 0.0
            coef[row, plane] = 4.0  # this object's mask: its own prototype
            row += 1
        if plane == 0:
            cx, cy, w, h = box
            protos[..., 0] = np.where(((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2 <= 1, 1.0, -1.0)
        else:
            protos[..., 1] = 1.0
    if layout == "v8":
        head = np.concatenate([xywh, cls, coef], axis=1).T[None]
    else:
        head = np.concatenate([xywh, np.ones((ANCHORS, 1)), cls, coef], axis=1)[None]
    return head.astype(np.float32), protos[None].astype(np.float32)


def image_fractions() -> dict[int, float]:
    w, h = IMAGE
    px, py = PERSON[2] - PERSON[0], PERSON[3] - PERSON[1]
    return {0: np.pi / 4 * px * py / (w * h), 2: (CAT[2] - CAT[0]) * (CAT[3] - CAT[1]) / (w * h)}


@pytest.mark.parametrize("layout", ["v8", "v5"])
def test_masks_come_from_the_prototypes_and_the_coefficients_are_not_classes(layout: str) -> None:
    head, protos = seg_outputs(layout)
    geo = Geometry.plan(IMAGE, (SIZE, SIZE), "letterbox")
    found, masks = detect.decode_yolo_seg(head, protos, threshold=0.5, input_size=(SIZE, SIZE))
    assert found.classes.tolist() == [0, 2] and masks.shape == (2, P, P), (
        found
    )  # not class 3+ (a coefficient)
    classes = segment.instance_map(masks, found.classes, found.scores)
    got = {s.index: s.fraction for s in segment.segments(classes, LABELS, geo)}
    want = image_fractions()
    assert abs(got[0] - want[0]) <= 0.02 and abs(got[2] - want[2]) <= 0.02, (got, want)
    assert set(got) == {0, 2, segment.BACKGROUND}
    # channels first ([1, M, P, P], as some exporters give them): the same masks
    _, again = detect.decode_yolo_seg(head, np.moveaxis(protos, 3, 1), threshold=0.5, input_size=(SIZE, SIZE))
    assert (again == masks).all()


def test_instance_map_puts_the_best_scoring_instance_on_top() -> None:
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2] = True  # class 5, score 0.5
    masks[1, 1:3] = True  # class 7, score 0.9: wins row 1
    masks[2, 3, 3] = True  # class 1, score 0.3
    got = segment.instance_map(masks, np.array([5, 7, 1]), np.array([0.5, 0.9, 0.3]))
    assert got[:, 0].tolist() == [5, 7, 7, segment.BACKGROUND] and got[3, 3] == 1
    assert (segment.instance_map(masks[:0], np.zeros(0), np.zeros(0)) == segment.BACKGROUND).all()


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_models(tmp_path_factory.mktemp("yolo-seg"), {"yolo-seg": list(seg_outputs())}, SIZE)[
        "yolo-seg"
    ]


def test_pipeline_decodes_a_yolo_seg_model_to_boxes_segments_and_mask(seg_model: Path) -> None:
    model = load(seg_model)
    choice = select.choose(model.outputs, input_hw=(SIZE, SIZE))
    assert (choice.task, choice.decoder) == (
        "detector",
        "yolo_seg",
    ) and "32 mask coefficients" in choice.reason
    pipe = Pipeline(model, LABELS, Normalization(), Settings(threshold=0.5, mask=True))
    assert pipe.kind == "detector" and pipe.resize == "letterbox"
    res = pipe.run(Image.new("RGB", IMAGE, (90, 90, 90)))
    assert res.fields is not None
    dets = res.fields["detections"]
    assert [d["label"] for d in dets] == ["person", "cat"] and res.fields["counts"] == {"person": 1, "cat": 1}
    w, h = IMAGE
    for d, (x0, y0, x1, y1) in zip(dets, (PERSON, CAT)):
        assert np.allclose(d["box"], [y0 / h, x0 / w, y1 / h, x1 / w], atol=0.01), d
    got = {s["label"]: s["fraction"] for s in res.fields["segments"]}
    want = image_fractions()
    assert set(got) == {"person", "cat"}  # no background entry: it is not a class of this model
    assert abs(got["person"] - want[0]) <= 0.02 and abs(got["cat"] - want[2]) <= 0.02, (got, want)
    assert res.mask_png is not None
    mask = np.asarray(Image.open(io.BytesIO(res.mask_png)))
    assert mask.shape[1] / mask.shape[0] == pytest.approx(w / h, rel=0.05)  # the image's, not the input's
    assert set(np.unique(mask).tolist()) == {0, 2, segment.BACKGROUND}
