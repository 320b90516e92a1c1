"""The inference pipeline on a real model: stage timings, settings, bad images."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import InputError
from edge.inference.pipeline import Pipeline, Settings
from edge.inference.preprocess import Normalization
from edge.model.labels import read_labels
from edge.model.runtime import load_model


@pytest.fixture(scope="module")
def mobilenet(coral: Path) -> Pipeline:
    m = load_model(coral / "mobilenet_v1_0.25_128_quant.tflite", threads=1)
    return Pipeline(m, read_labels(coral / "imagenet_labels.txt"), Normalization(), Settings(top_k=3))


def test_pipeline_times_each_stage_and_finds_the_cat(mobilenet: Pipeline, coral: Path) -> None:
    res = mobilenet.run(coral / "cat.bmp", "cat.bmp")
    assert res.kind == "classifier" and res.result_key == "top_k" and len(res.result) == 3
    assert any(282 <= c["index"] <= 286 for c in res.result), res.result
    lat = res.latency_ms
    assert set(lat) == {"preprocess", "inference", "postprocess", "total"}
    assert all(v >= 0 for v in lat.values())
    assert lat["total"] >= lat["preprocess"] + lat["inference"] + lat["postprocess"] - 1e-6


def test_pipeline_settings_apply_to_next_run(mobilenet: Pipeline, coral: Path) -> None:
    mobilenet.settings.top_k = 1
    try:
        assert len(mobilenet.run((coral / "cat.bmp").read_bytes()).result) == 1
    finally:
        mobilenet.settings.top_k = 3


@pytest.mark.parametrize("data,needle", [(b"", "empty"), (b"not an image at all", "cannot be decoded")])
def test_pipeline_bad_images(mobilenet: Pipeline, data: bytes, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        mobilenet.run(data, "x")


def test_truncated_bmp(mobilenet: Pipeline, coral: Path) -> None:
    data = (coral / "cat.bmp").read_bytes()
    with pytest.raises(InputError, match="truncated"):
        mobilenet.run(data[: len(data) // 2], "half.bmp")
