"""The real agent with the new tasks and a live stream: a MoveNet pose model on an HTTP MJPEG camera
that is killed and restarted mid-run, and DeepLab on a file with the PNG mask published."""

from __future__ import annotations

import io
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge.contract import schemas
from tests.agent.sources.live import Camera, free_port
from tests.support import DATA
from tests.support.agent import AgentProcess, agent_command
from tests.support.broker import Mosquitto


def test_pose_model_on_a_live_stream_survives_a_camera_restart(
    mosquitto: Mosquitto, capture: Any, tmp_path: Path
) -> None:
    cam = Camera(free_port())
    cam.start()
    sub = capture("edge/cam/#")
    assert sub.subscribed.wait(10)
    agent = AgentProcess(
        agent_command(
            mosquitto,
            "cam",
            tmp_path / "state",
            "--model",
            str(DATA / "movenet_single_pose_lightning_ptq.tflite"),
            "--source",
            cam.url,
            "--fps",
            "10",
            "--metrics-interval",
            "1",
            "--threads",
            "1",
        ),
        tmp_path / "agent.log",
    )
    try:
        preds = sub.wait(
            lambda s: len(s.json("edge/cam/predictions")) >= 5 and s.json("edge/cam/predictions"),
            60,
            "predictions from the stream",
        )
        p = preds[-1]
        assert p["kind"] == "pose" and [k["name"] for k in p["keypoints"]][:2] == ["nose", "left_eye"]
        assert p["frame"]["age_ms"] < 1000 and p["source"].startswith("http://127.0.0.1")
        assert schemas.problems("predictions", p) == []
        status = sub.json("edge/cam/status")[-1]
        assert status["task"]["task"] == "pose" and status["preprocess"]["resize"] == "stretch"
        assert schemas.problems("status", status) == []
        metrics = sub.wait(
            lambda s: [m for m in s.json("edge/cam/metrics") if "stream" in m], 20, "stream metrics"
        )
        assert metrics[-1]["stream"]["connected"] is True and schemas.problems("metrics", metrics[-1]) == []
        # --fps 10 on a 30 fps camera: two frames in three are never inferred
        later = sub.wait(
            lambda s: [
                m for m in s.json("edge/cam/metrics") if m.get("stream", {}).get("frames_dropped", 0) > 10
            ],
            20,
            "drops counted",
        )
        assert later[-1]["stream"]["frames_dropped"] > 0.4 * later[-1]["stream"]["frames_read"]

        cam.kill()
        errors = sub.wait(lambda s: s.json("edge/cam/errors"), 30, "the loss reported on errors")
        assert "reconnecting with backoff" in errors[0]["error"] and "keeps retrying" in errors[0]["fix"]
        assert agent.alive()
        cam.start()
        restarted = time.time()
        sub.wait(
            lambda s: [
                p for p in s.json("edge/cam/predictions") if epoch(p["frame"]["captured_at"]) > restarted
            ],
            30,
            "predictions again after the camera came back",
        )
        assert len(sub.json("edge/cam/errors")) == 1  # one report per outage, not per retry
    finally:
        agent.terminate()
        cam.kill()


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_segmentation_with_mask_on_a_file(mosquitto: Mosquitto, capture: Any, tmp_path: Path) -> None:
    sub = capture("edge/seg/#")
    assert sub.subscribed.wait(10)
    agent = AgentProcess(
        agent_command(
            mosquitto,
            "seg",
            tmp_path / "state",
            "--model",
            str(DATA / "deeplabv3_mnv2_pascal_quant.tflite"),
            "--labels",
            str(DATA / "pascal_voc_segmentation_labels.txt"),
            "--source",
            str(DATA / "bird_segmentation.bmp"),
            "--publish-mask",
            "--once",
            "--threads",
            "1",
        ),
        tmp_path / "agent.log",
    )
    assert agent.wait(120) == 0, agent.output()[-3000:]
    (pred,) = sub.wait(lambda s: s.json("edge/seg/predictions"), 30, "the prediction")
    assert pred["kind"] == "segmentation" and [x["label"] for x in pred["segments"]] == ["background", "bird"]
    assert abs(pred["segments"][1]["fraction"] - 0.195) <= 0.02  # the reference mask's bird share
    (mask,) = sub.wait(lambda s: s.on("edge/seg/mask"), 30, "the mask")
    img = Image.open(io.BytesIO(mask.payload))
    assert img.format == "PNG" and max(img.size) <= 256 and set(np.unique(np.asarray(img)).tolist()) == {0, 3}


def test_task_and_stream_flags_reach_the_config() -> None:
    from edge.agent.cli import _flags, _parser
    from edge.agent.config import load_config

    args = _parser().parse_args(
        [
            "run",
            "--task",
            "detector",
            "--resize",
            "letterbox",
            "--iou",
            "0.3",
            "--max-detections",
            "7",
            "--publish-mask",
            "--full-embedding",
            "--fps",
            "5",
            "--motion-threshold",
            "0.02",
        ]
    )
    cfg = load_config(flags=_flags(args), environ={"EDGE_HOMEASSISTANT_OBJECTS": "person, car"})
    assert (cfg.model.task, cfg.preprocess.resize) == ("detector", "letterbox")
    pp = cfg.postprocess
    assert (pp.iou, pp.max_detections, pp.publish_mask, pp.full_embedding) == (0.3, 7, True, True)
    assert (cfg.source.fps, cfg.source.motion_threshold) == (5.0, 0.02)
    assert cfg.homeassistant.objects == ["person", "car"]
