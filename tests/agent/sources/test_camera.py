"""``camera:N``: the latest-frame stream reader (edge.agent.sources.stream.StreamSource) behind a V4L2
opener (edge.agent.sources.camera).

Faked: the camera device. This kernel has no v4l2loopback and CI no /dev/videoN, so the opener seam
(``open_camera(opener=...)``) is handed a real 30 fps HTTP MJPEG stream (a server process the test kills
and restarts) in place of ``/dev/video0``. Everything after the opener is what a camera runs: the reader
thread, the newest frame, the rate cap from ``camera_interval_s``, drop counting, loss and reconnection.
The real V4L2 opener runs too, against a device number that does not exist.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.agent.config import SourceConfig
from edge.agent.sources import open_source
from edge.agent.sources.camera import open_camera
from edge.agent.sources.stream import OpenCVCapture
from tests.agent.sources.live import Camera, Events, assert_capped
from tests.agent.sources.mjpeg_server import frame_number


@pytest.fixture
def mjpeg() -> Iterator[Camera]:
    cam = Camera()
    cam.start()
    yield cam
    cam.kill()


@pytest.mark.hardware  # the device is faked: a real MJPEG stream behind the opener seam
def test_camera_reads_like_a_stream_newest_frame_capped_rate_reconnect(mjpeg: Camera) -> None:
    events = Events()
    src = open_camera(0, interval_s=0.2, on_event=events, opener=lambda index: OpenCVCapture(mjpeg.url))
    src.backoff_s = (0.2, 1.0)
    assert src.description == "camera:0" and src.fps == 5.0  # no --fps: one frame per camera_interval_s
    stop = threading.Event()
    got: list[tuple[float, int, float]] = []  # (handed out at, frame number, age)

    def consume() -> None:
        for item in src.items(stop, once=False):
            now = time.monotonic()
            got.append((now, frame_number(np.asarray(item.data)), now - item.meta["captured_mono"]))

    worker = threading.Thread(target=consume)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while len(got) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(got) >= 8, got
        stats = src.stats()
        mjpeg.kill()
        assert events.wait_for("lost", 10), events.seen
        assert src.link()["connected"] is False and src.link()["last_error"]
        time.sleep(1.0)
        mjpeg.start()
        restarted = time.monotonic()
        assert events.wait_for("recovered", 10), events.seen
        deadline = time.monotonic() + 5
        while not [t for t, _, _ in got if t > restarted] and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        worker.join(timeout=10)
        src.close()
    first = got[:8]
    assert_capped([t for t, _, _ in first], 0.2)  # 5 a second, not 30
    steps = np.diff([n for _, n, _ in first[2:]])  # (the first frames may come from FFmpeg's probe buffer)
    assert (steps >= 3).all(), first  # ~6 frames of the 30 fps camera pass between two hand-outs
    assert sorted(a for _, _, a in first[2:])[len(first) // 2 - 1] < 2.5 / 30, first  # the newest frame
    assert stats["frames_dropped"] >= 0.6 * stats["frames_read"] and 20 <= stats["stream_fps"] <= 40, stats
    assert events.kinds() == ["lost", "recovered"] and "reconnecting with backoff" in events.seen[0][2]
    after = [t for t, _, _ in got if t > restarted]
    assert after and after[0] - restarted <= 1.0 + 2.0, "no frame within the capped backoff + opening"
    assert src.link() == {"connected": False, "reconnects": 1, "last_error": ""}  # closed after recovery


def test_fps_flag_wins_over_the_camera_interval() -> None:
    opener = lambda index: None  # noqa: E731 (never started)
    assert open_camera(2, fps=12.0, interval_s=1.0, opener=opener).fps == 12.0
    assert open_camera(2, interval_s=0.0, opener=opener).fps is None  # 0: as fast as the model runs
    assert open_camera(2, opener=opener).description == "camera:2"


def test_a_missing_device_is_reported_and_retried_not_raised(tmp_path: Path) -> None:
    """The real V4L2 opener: a camera that is not there (unplugged) is an outage, not a crash."""
    index = next(i for i in range(63, 0, -1) if not Path(f"/dev/video{i}").exists())
    events = Events()
    src = open_source(
        f"camera:{index}",
        state_dir=tmp_path,
        client=None,
        infer_topic="unused",
        cfg=SourceConfig(camera_interval_s=0.1),
        on_stream_event=events,
    )
    src.backoff_s = (0.05, 0.1)  # type: ignore[attr-defined]
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    assert list(src.items(stop, once=False)) == []
    src.close()
    assert events.kinds() == ["lost"], events.seen  # once, though it was retried every 0.1 s
    what = events.seen[0][2]
    assert f"camera {index} (/dev/video{index}) cannot be opened" in what and "reconnecting" in what
    link = src.link()  # type: ignore[attr-defined]
    assert link["connected"] is False and "cannot be opened" in link["last_error"]
