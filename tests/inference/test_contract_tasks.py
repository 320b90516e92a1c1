"""Prediction and status messages for every task, built from real pipeline results, against the JSON
Schemas (jsonschema and the built-in validator alike)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.contract import messages, schemas
from edge.inference.pipeline import Pipeline, Result, Settings
from edge.inference.preprocess import Normalization
from edge.model.labels import read_labels
from tests.inference.runtime_helpers import load

SHA = "0" * 64


def prediction(res: Result, **kw: Any) -> dict[str, Any]:
    return messages.prediction(
        "cam1",
        seq=3,
        source="frame.jpg",
        model_sha256=SHA,
        latency_ms=res.latency_ms,
        kind=res.kind,
        result_key=res.result_key,
        result=res.result,
        fields=res.fields,
        **kw,
    )


def both(kind: str, payload: dict[str, Any]) -> list[str]:
    return schemas.problems(kind, payload) + schemas.problems(kind, payload, builtin=True)


@pytest.fixture(scope="module")
def results(coral: Path) -> dict[str, Result]:
    labels = read_labels(coral / "pascal_voc_segmentation_labels.txt")
    pose = Pipeline(load(coral / "movenet_single_pose_lightning_ptq.tflite"), {}, Normalization(), Settings())
    seg = Pipeline(load(coral / "deeplabv3_mnv2_pascal_quant.tflite"), labels, Normalization(), Settings())
    emb = Pipeline(
        load(coral / "deeplabv3_mnv2_pascal_quant.tflite"),
        labels,
        Normalization(),
        Settings(),
        task="embedding",
    )
    return {
        "pose": pose.run(coral / "squat.bmp"),
        "segmentation": seg.run(coral / "bird_segmentation.bmp"),
        "embedding": emb.run(coral / "bird_segmentation.bmp"),
    }


@pytest.mark.parametrize("task", ["pose", "segmentation", "embedding"])
def test_every_task_prediction_follows_the_schema(results: dict[str, Result], task: str) -> None:
    payload = prediction(
        results[task], frame={"captured_at": messages.utc_iso(), "age_ms": 41.5, "number": 7}
    )
    assert payload["kind"] == task
    assert both("predictions", payload) == []
    # the task's result key is required: dropping it is caught by both validators
    key = results[task].result_key
    broken = {k: v for k, v in payload.items() if k != key}
    assert schemas.problems("predictions", broken) and schemas.problems("predictions", broken, builtin=True)


def test_embedding_on_request_reads_the_output_as_a_vector(results: dict[str, Result]) -> None:
    emb = results["embedding"].result
    assert emb["dim"] == 513 * 513 and emb["truncated"] is True and len(emb["values"]) == 8
    # DeepLab's output is a class index per pixel: only the birds (class 3) add to the norm
    bird = next(s for s in results["segmentation"].result if s["label"] == "bird")
    assert emb["norm"] == pytest.approx(3 * np.sqrt(round(bird["fraction"] * 513 * 513)), rel=1e-3)


def test_detector_counts_and_bad_counts() -> None:
    res = Result(
        "detector",
        "detections",
        [{"index": 0, "label": "person", "score": 0.9, "box": [0.1, 0.1, 0.5, 0.5]}],
        {"preprocess": 1.0, "inference": 2.0, "postprocess": 0.1, "total": 3.1},
        {
            "detections": [{"index": 0, "label": "person", "score": 0.9, "box": [0.1, 0.1, 0.5, 0.5]}],
            "counts": {"person": 1},
        },
    )
    payload = prediction(res)
    assert both("predictions", payload) == []
    payload["counts"] = {"person": "one"}
    assert schemas.problems("predictions", payload) and schemas.problems("predictions", payload, builtin=True)


def test_status_says_which_task_and_why(coral: Path) -> None:
    pipe = Pipeline(load(coral / "movenet_single_pose_lightning_ptq.tflite"), {}, Normalization(), Settings())
    m = pipe.model
    desc = pipe.describe()
    body = messages.status(
        "cam1",
        agent_version="0",
        started_at=messages.utc_iso(),
        model={
            "path": str(m.path),
            "requested_path": str(m.path),
            "sha256": m.sha256,
            "size_bytes": m.size_bytes,
            "inputs": [t.describe() for t in m.inputs],
            "outputs": [t.describe() for t in m.outputs],
        },
        runtime={"name": m.runtime.name, "version": m.runtime.version},
        delegate="cpu",
        notes=[],
        arch="x86_64",
        board=None,
        hostname="h",
        python="3.11",
        threads=1,
        source="rtsp://cam/live",
        kind=pipe.kind,
        task=desc["task"],
        preprocess=desc["preprocess"],
    )
    assert both("status", body) == []
    assert body["task"]["task"] == "pose" and "MoveNet" in body["task"]["reason"]
    assert body["preprocess"]["resize"] == "stretch"
