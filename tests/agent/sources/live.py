"""Live cameras for the source tests, each a real server in its own process that a test kills and
restarts on the same port: an HTTP MJPEG camera (mjpeg_server.py, numbered frames) and an RTSP camera
(rtsp_server.py: GStreamer's RTSP server under the system Python, which has the gi bindings)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tests.support.broker import free_port
from tests.support.process import subprocess_env

HERE = Path(__file__).parent
FPS = 30.0
# python3-gi and gir1.2-gst-rtsp-server-1.0 are Debian packages (dev.sh apt_packages): they import under
# the system interpreter only
SYSTEM_PYTHON = "/usr/bin/python3"


class Served:
    """A server process, startable again on the same port; it prints "ready" once listening."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[str] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return subprocess_env()

    def start(self) -> None:
        # stderr to a file, not a pipe nobody reads (a full pipe would block the server)
        log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            self.command(), text=True, stdout=subprocess.PIPE, stderr=log, env=self.env()
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.wait(timeout=10)
            log.seek(0)
            raise AssertionError(f"{self.command()} did not start: {log.read()[-2000:]}")
        log.close()  # the child keeps its own descriptor

    def kill(self) -> None:
        """Abruptly, as a camera losing power."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


class Camera(Served):
    """HTTP MJPEG at FPS; each frame carries its number (mjpeg_server.frame_number)."""

    def command(self) -> list[str]:
        return [sys.executable, str(HERE / "mjpeg_server.py"), str(self.port), str(FPS)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream"


class RtspCamera(Served):
    """RTSP (RTP/JPEG) of a still JPEG at ``fps``, served by gst-rtsp-server."""

    def __init__(self, image: Path, fps: int = 30, port: int | None = None) -> None:
        super().__init__(port)
        self.image, self.fps = image, fps

    def command(self) -> list[str]:
        return [SYSTEM_PYTHON, str(HERE / "rtsp_server.py"), str(self.port), str(self.fps), str(self.image)]

    def env(self) -> dict[str, str]:
        env = subprocess_env()
        env.pop("PYTHONPATH")  # the system interpreter: none of the venv's or checkout's modules
        return env

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live"


class Events:
    """An ``on_event`` hook recording (time, kind, message)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, str]] = []
        self.cond = threading.Condition()

    def __call__(self, kind: str, message: str) -> None:
        with self.cond:
            self.seen.append((time.monotonic(), kind, message))
            self.cond.notify_all()

    def kinds(self) -> list[str]:
        return [k for _, k, _ in self.seen]

    def wait_for(self, kind: str, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: kind in self.kinds(), timeout=timeout)


def assert_capped(times: list[float], gap: float) -> None:
    """Hand-outs (consumer-side times) at most one per ``gap``, and not much slower. Checked cumulatively:
    a consumer thread resumed late once makes one gap long and the next one short, but never gets ahead
    of the cap (which counts from each hand-out)."""
    t = np.asarray(times) - times[0]
    ahead = [(i, round(float(x), 3)) for i, x in enumerate(t) if x < i * gap - 0.03]
    assert not ahead, f"faster than 1 per {gap} s: {ahead}"
    assert np.median(np.diff(t)) <= 1.5 * gap, np.diff(t)
