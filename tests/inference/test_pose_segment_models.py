"""MoveNet and DeepLab v3 (google-coral/test_data) through the real runtime and the task decoders,
checked against the model owners' reference keypoints and mask."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.inference.preprocess import image_to_tensor
from edge.inference.tasks import pose, segment, select
from edge.inference.tasks.geometry import Geometry
from edge.model.labels import read_labels
from tests.inference.runtime_helpers import load, run

MOVENET = "movenet_single_pose_lightning_ptq.tflite"
DEEPLAB = "deeplabv3_mnv2_pascal_quant.tflite"


def reference_keypoints(coral: Path) -> np.ndarray:
    """[17, 3]: x, y, score per keypoint, in keypoint order."""
    with open(coral / "movenet_single_pose_lightning_ptq_reference.csv") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["keypoint_id"]))
    return np.array(
        [[float(r["keypoint_x"]), float(r["keypoint_y"]), float(r["keypoint_score"])] for r in rows]
    )


def movenet_pose(coral: Path, mode: str) -> pose.Pose:
    model = load(coral / MOVENET)
    img = Image.open(coral / "squat.bmp").convert("RGB")
    spec = model.inputs[0]
    geo = Geometry.plan(img.size, (spec.shape[2], spec.shape[1]), mode)
    choice = select.choose(model.outputs)
    assert (choice.task, choice.decoder) == ("pose", "movenet_single"), choice
    (out,) = run(model, image_to_tensor(geo.apply(img), spec))
    return pose.movenet_single(out, geo)


def test_movenet_keypoints_match_the_reference(coral: Path) -> None:
    ref = reference_keypoints(coral)
    got = movenet_pose(coral, "stretch")
    assert [k.name for k in got.keypoints] == list(pose.COCO_KEYPOINTS)
    xy = np.array([[k.x, k.y] for k in got.keypoints])
    err = np.abs(xy - ref[:, :2]).max()
    assert err <= 0.05, f"keypoints differ from the reference by up to {err:.3f}"
    assert 0.0 < got.score <= 1.0
    d = got.as_dict()
    assert d["keypoints"][0]["name"] == "nose" and set(d["keypoints"][0]) == {"name", "x", "y", "score"}


def test_movenet_letterboxed_keypoints_land_on_the_original_image(coral: Path) -> None:
    """Letterboxing changes what the model sees (padding, no distortion); the geometry must still map the
    keypoints onto the same body parts of the original picture."""
    ref = reference_keypoints(coral)
    got = movenet_pose(coral, "letterbox")
    xy = np.array([[k.x, k.y] for k in got.keypoints])
    err = np.abs(xy - ref[:, :2]).max()
    assert err <= 0.05, f"letterboxed keypoints differ from the reference by up to {err:.3f}"


def deeplab_classes(coral: Path, mode: str, crop: tuple[int, int, int, int] | None = None):  # noqa: ANN201
    model = load(coral / DEEPLAB)
    img = Image.open(coral / "bird_segmentation.bmp").convert("RGB")
    if crop is not None:
        img = img.crop(crop)
    spec = model.inputs[0]
    geo = Geometry.plan(img.size, (spec.shape[2], spec.shape[1]), mode)
    choice = select.choose(model.outputs, input_hw=(spec.shape[1], spec.shape[2]))
    assert (choice.task, choice.decoder) == ("segmentation", "class_map"), choice
    (out,) = run(model, image_to_tensor(geo.apply(img), spec))
    return segment.class_map(out), geo


def test_deeplab_fractions_match_the_reference_mask(coral: Path) -> None:
    labels = read_labels(coral / "pascal_voc_segmentation_labels.txt")
    classes, geo = deeplab_classes(coral, "stretch")
    segs = segment.segments(classes, labels, geo)
    ref = np.array(Image.open(coral / "bird_segmentation_mask.bmp")).reshape(-1)
    ref_frac = np.bincount(ref, minlength=21) / ref.size
    got = {s.index: s.fraction for s in segs}
    for idx in set(got) | set(np.flatnonzero(ref_frac >= 0.01).tolist()):
        assert abs(got.get(idx, 0.0) - ref_frac[idx]) <= 0.02, (idx, got, ref_frac[:4])
    assert [s.label for s in segs[:2]] == ["background", "bird"]
    assert segs[0].fraction >= segs[1].fraction
    assert abs(sum(got.values()) - 1.0) < 1e-9


def test_deeplab_letterbox_counts_only_the_image(coral: Path) -> None:
    """A wide crop, letterboxed: the padding (which the model calls background) must not count, so the
    bird's fraction of the picture stays what the reference mask says for that crop."""
    box = (0, 100, 513, 400)  # 513 x 300
    classes, geo = deeplab_classes(coral, "letterbox", crop=box)
    assert geo.content[3] < 513  # padded above and below
    got = {s.index: s.fraction for s in segment.segments(classes, {}, geo)}
    ref = np.array(Image.open(coral / "bird_segmentation_mask.bmp"))[box[1] : box[3], box[0] : box[2]]
    ref_bird = float((ref == 3).mean())
    assert abs(got.get(3, 0.0) - ref_bird) <= 0.02, (got, ref_bird)


def test_deeplab_mask_png_is_capped_and_keeps_the_classes(coral: Path) -> None:
    classes, geo = deeplab_classes(coral, "stretch")
    png = segment.mask_png(classes, geo, max_side=128)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.mode == "L" and max(img.size) == 128
    assert set(np.unique(np.asarray(img)).tolist()) == {0, 3}
    bird = float((np.asarray(img) == 3).mean())
    assert abs(bird - float((classes == 3).mean())) <= 0.02
    tiny = segment.mask_png(classes, geo, max_side=513, max_bytes=300)
    assert len(tiny) <= 300 and max(Image.open(io.BytesIO(tiny)).size) < 513


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_geometry_round_trip(mode: str) -> None:
    geo = Geometry.plan((640, 480), (320, 320), mode)
    img_box = np.array([[0.25, 0.1, 0.75, 0.6]])  # y, x normalized to the image
    # forward by hand: image-normalized -> input pixels -> input-normalized
    left, top, cw, ch = geo.content
    inp = (img_box * [ch, cw, ch, cw] + [top, left, top, left]) / 320
    np.testing.assert_allclose(geo.boxes_to_source(inp), img_box, atol=1e-6)
    np.testing.assert_allclose(geo.points_to_source(inp[:, :2]), img_box[:, :2], atol=1e-6)
    if mode == "letterbox":
        assert geo.content == (0, 40, 320, 240)


def test_pipeline_publishes_named_keypoints_and_segments(coral: Path) -> None:
    from edge.inference.pipeline import Pipeline, Settings
    from edge.inference.preprocess import Normalization

    pipe = Pipeline(load(coral / MOVENET), {}, Normalization(), Settings())
    assert pipe.kind == "pose" and pipe.resize == "stretch"
    res = pipe.run(coral / "squat.bmp")
    assert res.result_key == "keypoints" and res.fields is not None and 0 < res.fields["pose_score"] <= 1
    ref = reference_keypoints(coral)
    assert abs(res.result[0]["x"] - ref[0, 0]) <= 0.05 and res.result[0]["name"] == "nose"

    labels = read_labels(coral / "pascal_voc_segmentation_labels.txt")
    seg = Pipeline(load(coral / DEEPLAB), labels, Normalization(), Settings(mask=True))
    out = seg.run(coral / "bird_segmentation.bmp")
    assert out.kind == "segmentation" and [s["label"] for s in out.result] == ["background", "bird"]
    assert out.mask_png is not None and Image.open(io.BytesIO(out.mask_png)).format == "PNG"
    assert seg.describe()["preprocess"]["resize"] == "stretch"
