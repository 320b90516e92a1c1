"""YOLO-pose and PoseNet through the real runtime and the pipeline, on models built here with
TensorFlow's converter whose outputs hold known poses (no such third-party model is available offline:
tests/data has MoveNet only, checked against its owner's reference in test_pose_segment_models.py).
Each decoded keypoint must land where it was put on the original picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.inference.pipeline import Pipeline, Settings
from edge.inference.preprocess import Normalization
from edge.inference.tasks.geometry import Geometry
from edge.inference.tasks.pose import COCO_KEYPOINTS
from tests.inference.runtime_helpers import build_models, load

K = len(COCO_KEYPOINTS)
YOLO_SIZE, ANCHORS = 320, 2100
POSENET_SIZE, GRID = 257, 9  # PoseNet MobileNet at 257x257: output stride 32 -> 9x9
IMAGE = (640, 480)
# Two people on the picture: box (x0, y0, x1, y1) in image pixels, score; keypoint k at a known place.
PEOPLE = [((100, 60, 260, 420), 0.92), ((380, 120, 520, 400), 0.74)]


def keypoints_on_image(box: tuple[int, int, int, int]) -> np.ndarray:
    """[17, 2] (x, y) image pixels: spread over the box in a fixed pattern."""
    x0, y0, x1, y1 = box
    t = np.linspace(0.1, 0.9, K)
    return np.column_stack([x0 + (x1 - x0) * t[::-1], y0 + (y1 - y0) * t])


def yolo_pose_head() -> np.ndarray:
    """[1, 56, N] in input pixels (letterboxed): both people, a near-duplicate of the first (NMS drops
    it) and low-score background anchors."""
    rng = np.random.default_rng(0)
    geo = Geometry.plan(IMAGE, (YOLO_SIZE, YOLO_SIZE), "letterbox")
    left, top, cw, _ = geo.content
    f = cw / IMAGE[0]
    cols = np.zeros((ANCHORS, 56), np.float32)
    cols[:, :2] = rng.uniform(0, YOLO_SIZE, (ANCHORS, 2))
    cols[:, 2:4] = 10
    cols[:, 4] = rng.uniform(0, 0.2, ANCHORS)
    row = 0
    for (x0, y0, x1, y1), score in PEOPLE:
        for s in (score, score - 0.1):
            cols[row, :4] = [(x0 + x1) / 2 * f + left, (y0 + y1) / 2 * f + top, (x1 - x0) * f, (y1 - y0) * f]
            cols[row, 4] = s
            kp = keypoints_on_image((x0, y0, x1, y1)) * f + [left, top]
            cols[row, 5::3], cols[row, 6::3], cols[row, 7::3] = kp[:, 0], kp[:, 1], 0.9
            row += 1
    return cols.T[None]


def posenet_outputs() -> list[np.ndarray]:
    """Heatmaps [1,9,9,17] (logits), offsets [1,9,9,34] (input pixels: y then x), and the two
    displacement maps [1,9,9,32] a multi-pose decoder would use. The first person, stretched into the
    input: each keypoint peaks at the grid cell nearest to it, the offset holds the rest."""
    geo = Geometry.plan(IMAGE, (POSENET_SIZE, POSENET_SIZE), "stretch")
    sx, sy = POSENET_SIZE / IMAGE[0], POSENET_SIZE / IMAGE[1]
    kp = keypoints_on_image(PEOPLE[0][0]) * [sx, sy]  # input pixels
    assert geo.mode == "stretch"
    step = POSENET_SIZE / (GRID - 1)
    hm = np.full((1, GRID, GRID, K), -6.0, np.float32)
    off = np.zeros((1, GRID, GRID, 2 * K), np.float32)
    for k, (x, y) in enumerate(kp):
        gy, gx = round(y / step), round(x / step)
        hm[0, gy, gx, k] = 4.0
        off[0, gy, gx, k], off[0, gy, gx, K + k] = y - gy * step, x - gx * step
    disp = np.zeros((1, GRID, GRID, 32), np.float32)
    return [hm, off, disp, disp + 1.0]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pose-models")
    built = build_models(root, {"yolo-pose": [yolo_pose_head()]}, YOLO_SIZE)
    built.update(build_models(root, {"posenet": posenet_outputs()}, POSENET_SIZE))
    return built


def image_xy(points: list[dict[str, float]]) -> np.ndarray:
    return np.array([[p["x"] * IMAGE[0], p["y"] * IMAGE[1]] for p in points])


def test_yolo_pose_model_gives_each_person_on_the_original_picture(models: dict[str, Path]) -> None:
    pipe = Pipeline(load(models["yolo-pose"]), {}, Normalization(), Settings(threshold=0.5))
    d = pipe.describe()
    assert (pipe.kind, d["task"]["decoder"], pipe.resize) == ("pose", "yolo_pose", "letterbox")
    res = pipe.run(Image.new("RGB", IMAGE, (90, 90, 90)))
    poses = res.result
    assert [round(p["pose_score"], 2) for p in poses] == [0.92, 0.74]  # best first, duplicate suppressed
    for p, (box, _) in zip(poses, PEOPLE):
        assert [k["name"] for k in p["keypoints"]] == list(COCO_KEYPOINTS)
        err = np.abs(image_xy(p["keypoints"]) - keypoints_on_image(box)).max()
        assert err <= 2.0, f"keypoints off by {err:.1f} image pixels"
        x0, y0, x1, y1 = box
        assert np.allclose(p["box"], [y0 / 480, x0 / 640, y1 / 480, x1 / 640], atol=0.005), p["box"]


def test_posenet_model_gives_the_keypoints_on_the_original_picture(models: dict[str, Path]) -> None:
    model = load(models["posenet"])
    pipe = Pipeline(model, {}, Normalization(), Settings())
    assert (pipe.kind, pipe.describe()["task"]["decoder"]) == ("pose", "posenet"), [
        o.shape for o in model.outputs
    ]
    res = pipe.run(Image.new("RGB", IMAGE, (90, 90, 90)))
    assert res.result_key == "keypoints" and res.fields is not None
    err = np.abs(image_xy(res.fields["keypoints"]) - keypoints_on_image(PEOPLE[0][0])).max()
    assert err <= 2.0, f"keypoints off by {err:.1f} image pixels"
    assert all(k["score"] == pytest.approx(1 / (1 + np.exp(-4.0)), abs=1e-3) for k in res.fields["keypoints"])
