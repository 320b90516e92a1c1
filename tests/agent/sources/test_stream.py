"""edge.agent.sources.stream against a live HTTP MJPEG camera (a server process the test kills and
restarts), a video file written here, and picamera2 behind its seam (faked: no Pi camera in CI)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.agent.sources import stream
from tests.agent.sources.live import FPS, Camera, Events, assert_capped, free_port
from tests.agent.sources.mjpeg_server import frame_number
from tests.support.agent import run_agent
from tests.support.broker import Mosquitto


@pytest.fixture
def camera() -> Iterator[Camera]:
    cam = Camera()
    cam.start()
    yield cam
    cam.kill()


def test_slow_consumer_gets_the_newest_frame_and_drops_are_counted(camera: Camera) -> None:
    """A 30 fps camera into a "model" taking 100 ms (10 inferences/s): each item is the frame that was
    newest when it was taken, never a queued old one."""
    src = stream.open_stream(camera.url)
    stop = threading.Event()
    got: list[tuple[int, float]] = []  # (frame number in the picture, age when handed out, s)
    try:
        for item in src.items(stop, once=False):
            age = time.monotonic() - item.meta["captured_mono"]
            got.append((frame_number(np.asarray(item.data)), age))
            if len(got) == 20:
                break
            time.sleep(0.1)  # the inference
        stats = src.stats()
    finally:
        src.close()
    numbers = [n for n, _ in got]
    steps = np.diff(numbers[2:])  # (the first frames may come from FFmpeg's probe buffer)
    assert (steps > 0).all(), numbers
    assert np.median(steps) >= 2, f"frames were queued, not skipped: {numbers}"  # ~3 at 30 fps / 10 per s
    ages = sorted(a for _, a in got[2:])
    # the newest frame: about one frame interval old at most (a queue would hand out 100 ms+ old ones)
    assert ages[len(ages) // 2] < 2.5 / FPS, ages
    assert stats["frames_dropped"] >= 0.5 * stats["frames_read"], stats
    assert 20 <= stats["stream_fps"] <= 40 and stats["connected"] is True, stats


def test_fps_cap_takes_the_newest_frame_per_slot(camera: Camera) -> None:
    src = stream.open_stream(camera.url, fps=5)
    stop = threading.Event()
    times, ages = [], []
    try:
        for item in src.items(stop, once=False):
            times.append(time.monotonic())
            ages.append(times[-1] - item.meta["captured_mono"])
            if len(times) == 6:
                break
    finally:
        src.close()
    assert_capped(times, 0.2)
    # the newest frame at each slot, not one queued since the last (0.2 s); the median, because a
    # loaded machine may stall the camera process once
    assert np.median(ages) < 0.1, ages


def test_a_lost_stream_is_reported_and_recovered_within_the_backoff(camera: Camera) -> None:
    events = Events()
    src = stream.StreamSource(
        lambda: stream.OpenCVCapture(camera.url), camera.url, backoff_s=(0.2, 1.0), on_event=events
    )
    stop = threading.Event()
    numbers: list[int] = []
    restarted_at = 0.0
    recovered_frame_at = 0.0

    def consume() -> None:
        nonlocal recovered_frame_at
        for item in src.items(stop, once=False):
            numbers.append(frame_number(np.asarray(item.data)))
            if restarted_at and not recovered_frame_at:
                recovered_frame_at = time.monotonic()
            time.sleep(0.05)

    worker = threading.Thread(target=consume)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while len(numbers) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(numbers) >= 5, "no frames before the outage"
        camera.kill()
        with events.cond:
            assert events.cond.wait_for(lambda: "lost" in events.kinds(), timeout=10), events.seen
        before = len(numbers)
        time.sleep(1.5)  # down long enough for several failed reconnects (the backoff grows to its cap)
        assert len(numbers) - before <= 1, "frames handed out while the camera was down"
        assert worker.is_alive() and src.stats()["connected"] is False
        camera.start()
        restarted_at = time.monotonic()
        with events.cond:
            assert events.cond.wait_for(lambda: "recovered" in events.kinds(), timeout=10), events.seen
        deadline = time.monotonic() + 5
        while not recovered_frame_at and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        worker.join(timeout=10)
        src.close()
    assert events.kinds() == ["lost", "recovered"], events.seen  # one report per outage, not per retry
    assert "reconnecting with backoff" in events.seen[0][2]
    assert recovered_frame_at, "no frame after the camera came back"
    # back within one (capped) backoff period plus the time to open the stream
    assert recovered_frame_at - restarted_at <= 1.0 + 2.0, recovered_frame_at - restarted_at
    assert src.stats()["reconnects"] == 1
    assert numbers[-1] > numbers[0]


def test_unreachable_url_is_reported_not_raised() -> None:
    events = Events()
    src = stream.StreamSource(
        lambda: stream.OpenCVCapture(f"http://127.0.0.1:{free_port()}/none"),
        "dead",
        backoff_s=(0.05, 0.1),
        on_event=events,
    )
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    assert list(src.items(stop, once=False)) == []
    src.close()
    assert events.kinds() == ["lost"] and "cannot open" in events.seen[0][2]
    assert "reconnecting" in events.seen[0][2]


def test_video_file_is_replayed_at_its_rate_and_ends(tmp_path: Path) -> None:
    import cv2  # the camera extra (dev.sh installs it)

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
    for i in range(10):
        px = np.zeros((48, 64, 3), np.uint8)
        px[..., 2] = 200  # red in OpenCV's BGR
        px[:, : 6 * i] = 255
        writer.write(px)
    writer.release()
    assert stream.stream_kind(str(path)) == "video"
    src = stream.open_stream(str(path))
    stop = threading.Event()
    t0 = time.monotonic()
    items = []
    for item in src.items(stop, once=True):
        items.append(item)
    one = items[0].data
    assert one.getpixel((63, 47))[0] > 150 and one.getpixel((63, 47))[2] < 80  # RGB: red stays red
    # the rest; at the end of the file the source idles (the agent stays up) until stopped
    threading.Timer(2.0, stop.set).start()
    rest = list(src.items(stop, once=False))
    src.close()
    assert 1 <= len(rest) <= 9 and src.stats()["connected"] is False
    assert time.monotonic() - t0 >= 0.35  # 10 frames at 20 fps are paced, not read in a burst
    assert src.stats()["frames_read"] == 10


class FakePicamera2:
    """picamera2's Picamera2, as far as the source uses it (no Pi camera here)."""

    started = False

    def __init__(self, index: int) -> None:
        if index != 0:
            raise IndexError("list index out of range")
        self.frames = 0

    def create_video_configuration(self, main: dict[str, Any]) -> dict[str, Any]:
        assert main["format"] == "RGB888"
        return {"main": main}

    def configure(self, cfg: dict[str, Any]) -> None:
        self.size = cfg["main"]["size"]

    def start(self) -> None:
        FakePicamera2.started = True

    def capture_array(self, name: str) -> np.ndarray:
        time.sleep(1 / 30)
        self.frames += 1
        px = np.zeros((self.size[1], self.size[0], 3), np.uint8)
        px[..., 0] = 255  # RGB888 is B, G, R in memory: this is blue
        return px

    def stop(self) -> None:
        FakePicamera2.started = False

    def close(self) -> None:
        pass


@pytest.mark.hardware
def test_picamera_behind_its_seam() -> None:
    module = type(sys)("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    src = stream.open_stream("picamera", fps=10, picamera_module=module)
    assert src.description == "picamera:0"
    stop = threading.Event()
    (item,) = list(src.items(stop, once=True))
    assert item.data.size == (640, 480) and item.data.getpixel((0, 0)) == (0, 0, 255)
    src.close()
    assert FakePicamera2.started is False
    bad = stream.open_stream("picamera:3", picamera_module=module)
    events = Events()
    bad.on_event, bad.backoff_s = events, (0.05, 0.05)
    threading.Timer(0.5, stop.set).start()
    stop.clear()
    assert list(bad.items(stop, once=False)) == []
    bad.close()
    assert "Pi camera 3 cannot be started" in events.seen[0][2]


def test_missing_picamera2_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(stream.StreamError) as err:
        stream.PiCameraCapture(0)
    assert "python3-picamera2" in err.value.fix


def test_specs_and_redaction() -> None:
    assert stream.stream_kind("rtsp://cam.local:554/live") == "url"
    assert stream.stream_kind("https://x/y.m3u8") == "url"
    assert stream.stream_kind("picamera:1") == "picamera"
    assert stream.stream_kind("camera:0") is None and stream.stream_kind("mqtt") is None
    assert stream.redact("rtsp://admin:s3cret@10.0.0.5:554/h264") == "rtsp://admin:***@10.0.0.5:554/h264"
    with pytest.raises(stream.StreamError, match="--fps"):
        stream.StreamSource(lambda: None, "x", fps=0)  # type: ignore[arg-type, return-value]


class StillThenMoving:
    """A capture whose picture stays the same for 20 frames, then changes at every frame."""

    bgr = False
    fps = 0.0

    def __init__(self) -> None:
        self.n = 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        time.sleep(0.005)
        self.n += 1
        px = np.full((48, 64, 3), 100, np.uint8)
        if self.n > 20:
            px[:, : (self.n * 7) % 64] = 250  # a moving edge
        px += np.random.default_rng(self.n).integers(0, 3, px.shape, dtype=np.uint8)  # sensor noise
        return True, px

    def release(self) -> None:
        pass


def test_motion_gate_skips_still_frames() -> None:
    cap = StillThenMoving()
    src = stream.StreamSource(lambda: cap, "fake", motion_threshold=0.02)
    stop = threading.Event()
    got = []
    for item in src.items(stop, once=False):
        got.append(item.meta["frame"])
        if len(got) == 4:
            break
    src.close()
    # the first frame goes through, the still ones (noise only) are skipped, moving ones pass again
    assert got[0] <= 3 and all(n > 20 for n in got[1:]), got
    assert src.stats()["frames_still"] >= 5
    assert stream.motion(np.zeros((48, 64)), np.full((48, 64), 255.0)) == 1.0
    with pytest.raises(stream.StreamError, match="--motion-threshold"):
        stream.StreamSource(lambda: cap, "x", motion_threshold=2)


def test_once_on_a_stream_that_never_connects_gives_up_and_says_why(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path
) -> None:
    """A real agent, ``--once`` on a URL where nothing listens: exit 1 within the connect timeout, the
    stream and its last error named, ``offline`` published (before: it waited for ever)."""
    url = f"http://user:secret@127.0.0.1:{free_port()}/cam.mjpg"
    started = time.monotonic()
    r = run_agent(
        mosquitto,
        "t1",
        tmp_path / "state",
        "--model",
        coral / "mobilenet_v1_0.25_128_quant.tflite",
        "--source",
        url,
        "--once",
        "--connect-timeout",
        "2",
        "--flush-timeout",
        "5",
        timeout=60,
    )
    took = time.monotonic() - started
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    err = r.stderr
    assert "could not open the stream http://user:***@127.0.0.1" in err and "after 2 s" in err, err
    assert "last error: cannot open" in err and "fix: check the URL" in err, err
    assert "secret" not in err
    assert took < 2 + 30, took  # the 2 s wait, the model load and the flush; not for ever
    avail = subprocess.run(
        ["mosquitto_sub", "-p", str(mosquitto.port), "-t", "edge/t1/availability", "-C", "1", "-W", "10"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert avail == "offline"


def _dead(connect_timeout_s: float) -> stream.StreamSource:
    return stream.StreamSource(
        lambda: stream.OpenCVCapture(f"http://127.0.0.1:{free_port()}/none"),
        "dead",
        backoff_s=(0.05, 0.1),
        connect_timeout_s=connect_timeout_s,
    )


def test_without_once_a_dead_stream_is_retried_past_the_connect_timeout() -> None:
    src = _dead(0.3)
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    started = time.monotonic()
    assert list(src.items(stop, once=False)) == []  # no error: it kept retrying until stopped
    assert time.monotonic() - started >= 1.4
    src.close()
    once = _dead(0.3)
    with pytest.raises(stream.StreamOpenTimeout, match="could not open the stream dead after 0.3 s"):
        list(once.items(threading.Event(), once=True))
    once.close()
