"""RTSP for real: GStreamer's RTSP server (gst-rtsp-server, run under the system Python that has its gi
bindings: rtsp_server.py) serves the squat photo as a live 30 fps RTP/JPEG stream, read through OpenCV's
FFmpeg like any IP camera. The server process is killed and restarted mid-run."""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge.agent.sources import stream
from edge.contract import schemas
from tests.agent.sources.live import Events, RtspCamera
from tests.agent.test_agent_tasks import epoch
from tests.support import DATA
from tests.support.agent import AgentProcess, agent_command
from tests.support.broker import Mosquitto

SIZE = (496, 608)  # the squat photo (500 x 610) with sides a multiple of 8, as RTP/JPEG requires


@pytest.fixture
def rtsp(tmp_path: Path) -> Iterator[RtspCamera]:
    jpeg = tmp_path / "squat.jpg"
    Image.open(DATA / "squat.bmp").convert("RGB").resize(SIZE).save(jpeg, quality=95)
    cam = RtspCamera(jpeg, fps=30)
    cam.start()
    yield cam
    cam.kill()


def test_rtsp_stream_is_read_newest_first_and_recovered_within_the_backoff(rtsp: RtspCamera) -> None:
    events = Events()
    src = stream.StreamSource(
        lambda: stream.OpenCVCapture(rtsp.url), rtsp.url, backoff_s=(0.2, 1.0), on_event=events
    )
    stop = threading.Event()
    got: list[tuple[float, Any]] = []  # (handed out at, item)

    def consume() -> None:
        for item in src.items(stop, once=False):
            got.append((time.monotonic(), item))
            time.sleep(0.1)  # a model at 10 inferences/s on a 30 fps camera

    worker = threading.Thread(target=consume)
    worker.start()
    try:
        deadline = time.monotonic() + 15
        while len(got) < 30 and time.monotonic() < deadline:  # 3 s: the start-up burst averaged out
            time.sleep(0.05)
        assert len(got) >= 30, "no frames from the RTSP server"
        stats = src.stats()
        rtsp.kill()
        assert events.wait_for("lost", 10), events.seen
        before = len(got)
        time.sleep(1.5)  # down long enough for several failed reconnects (the backoff grows to its cap)
        assert len(got) - before <= 1 and src.link()["connected"] is False
        rtsp.start()
        restarted = time.monotonic()
        assert events.wait_for("recovered", 10), events.seen
        deadline = time.monotonic() + 5
        while not [t for t, _ in got if t > restarted] and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        worker.join(timeout=10)
        src.close()
    first = [item for _, item in got[2:10]]  # (the first frames may come from FFmpeg's probe buffer)
    assert all(item.data.size == SIZE for item in first)
    px = np.asarray(first[-1].data, dtype=np.float32)
    photo = np.asarray(Image.open(DATA / "squat.bmp").convert("RGB").resize(SIZE), dtype=np.float32)
    assert np.abs(px - photo).mean() < 8, "not the served picture (or its channels swapped)"
    ages = sorted(t - item.meta["captured_mono"] for t, item in got[2:10])
    assert ages[len(ages) // 2] < 2.5 / 30, ages  # the newest frame, not one queued behind the model
    assert stats["frames_dropped"] >= 0.5 * stats["frames_read"] and 20 <= stats["stream_fps"] <= 40, stats
    assert events.kinds() == ["lost", "recovered"], events.seen  # one report per outage, not per retry
    assert "reconnecting with backoff" in events.seen[0][2]
    after = [t for t, _ in got if t > restarted]
    assert after and after[0] - restarted <= 1.0 + 2.0, "no frame within the capped backoff + opening"
    assert src.stats()["reconnects"] == 1


def reference_xy() -> np.ndarray:
    with open(DATA / "movenet_single_pose_lightning_ptq_reference.csv") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["keypoint_id"]))
    return np.array([[float(r["keypoint_x"]), float(r["keypoint_y"])] for r in rows])


def test_agent_predicts_pose_from_rtsp_and_reports_the_outage_on_errors_and_status(
    rtsp: RtspCamera, mosquitto: Mosquitto, capture: Any, tmp_path: Path
) -> None:
    sub = capture("edge/rtsp/#")
    assert sub.subscribed.wait(10)
    agent = AgentProcess(
        agent_command(
            mosquitto,
            "rtsp",
            tmp_path / "state",
            "--model",
            str(DATA / "movenet_single_pose_lightning_ptq.tflite"),
            "--source",
            rtsp.url,
            "--fps",
            "10",
            "--threads",
            "1",
        ),
        tmp_path / "agent.log",
    )

    def status_with(connected: bool, reconnects: int, error: bool) -> Any:
        return lambda s: [
            m
            for m in s.json("edge/rtsp/status")
            if "stream" in m
            and (m["stream"]["connected"], m["stream"]["reconnects"]) == (connected, reconnects)
            and bool(m["stream"]["last_error"]) is error
        ]

    try:
        preds = sub.wait(
            lambda s: len(s.json("edge/rtsp/predictions")) >= 3 and s.json("edge/rtsp/predictions"),
            60,
            "predictions from the RTSP stream",
        )
        p = preds[-1]
        assert p["kind"] == "pose" and p["source"].startswith(rtsp.url) and p["frame"]["age_ms"] < 1000
        xy = np.array([[k["x"], k["y"]] for k in p["keypoints"]])
        err = np.abs(xy - reference_xy()).max()
        assert err <= 0.05, f"keypoints from the stream differ from the owner's reference by {err:.3f}"
        assert schemas.problems("predictions", p) == []

        rtsp.kill()
        (error,) = sub.wait(lambda s: s.json("edge/rtsp/errors"), 30, "the loss reported on errors")
        assert error["source"] == rtsp.url and "reconnecting with backoff" in error["error"]
        (down,) = sub.wait(status_with(False, 0, True), 10, "status: stream lost")[-1:]
        assert "ended or stopped" in down["stream"]["last_error"] and schemas.problems("status", down) == []
        time.sleep(1.0)
        assert agent.alive()
        rtsp.start()
        restarted = time.time()
        again = sub.wait(
            lambda s: [
                p for p in s.json("edge/rtsp/predictions") if epoch(p["frame"]["captured_at"]) > restarted
            ],
            30,
            "predictions again after the server came back",
        )
        # the reader retries at most BACKOFF_S[1] apart; opening the stream and one inference on top
        assert epoch(again[0]["frame"]["captured_at"]) - restarted <= stream.BACKOFF_S[1] + 3.0
        (up,) = sub.wait(status_with(True, 1, False), 10, "status: stream back")[-1:]
        assert schemas.problems("status", up) == []
        assert len(sub.json("edge/rtsp/errors")) == 1  # one report per outage, not per retry
    finally:
        agent.terminate()
