"""Live streams with latest-frame semantics: ``rtsp://``, ``http(s)://`` (MJPEG, HLS) and video files
through OpenCV/FFmpeg (the ``camera`` extra), and the Pi Camera Module through picamera2.

A reader thread pulls frames as fast as the stream delivers them and keeps only the newest one; the
agent takes that newest frame whenever it is ready for the next inference (at most ``fps`` times a
second), so inference never works through a backlog of stale frames. Frames read but never used are
counted in ``frames_dropped``. A network stream that fails or ends is reopened with exponential
backoff; the loss and the recovery are reported through ``on_event`` (the agent turns them into
``errors``/status messages) and the agent keeps running. A video file is replayed at its own frame
rate, as a camera would deliver it, and ends the source at its end.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from PIL import Image

from edge.agent.sources.base import Item
from edge.errors import EdgeError

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp", "rtsps", "http", "https")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mjpeg", ".mjpg", ".h264", ".h265", ".ts")
_PICAMERA = re.compile(r"^picamera(?::(\d+))?$")
BACKOFF_S = (0.5, 10.0)  # first and longest wait before reopening a lost stream
OPEN_TIMEOUT_MS = 5000  # FFmpeg gives up opening / reading after this (a dead server must not hang us)
# A --once run gives up when no frame came within this (reopening with backoff meanwhile); a long-running
# agent keeps reconnecting forever instead. 30 s covers a camera's cold start and a few backoff rounds.
CONNECT_TIMEOUT_S = 30.0


class StreamError(EdgeError):
    pass


class StreamOpenTimeout(StreamError):
    """A --once run got no frame in time: a failed run (exit 1), not a usage error."""

    exit_code = 1


class Capture(Protocol):
    """One open stream. ``read`` blocks for the next frame: (True, HxWx3 uint8) or (False, None)."""

    bgr: bool  # channel order of the frames read
    fps: float  # the stream's own frame rate when known (0 otherwise)

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


Opener = Callable[[], Capture]
EventHook = Callable[[str, str], None]  # (event: "lost" | "recovered", message)


def is_stream_spec(spec: str) -> bool:
    """``--source`` values this module serves: stream URLs, ``picamera[:N]`` and video files."""
    return stream_kind(spec) is not None


def stream_kind(spec: str) -> str | None:
    if urlsplit(spec).scheme.lower() in URL_SCHEMES:
        return "url"
    if _PICAMERA.match(spec):
        return "picamera"
    if Path(spec).suffix.lower() in VIDEO_SUFFIXES and Path(spec).is_file():
        return "video"
    return None


def redact(url: str) -> str:
    """The URL without its password (it ends up in logs, status and MQTT messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def require_cv2(who: str = "stream and video sources need") -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise StreamError(
            f"{who} OpenCV, which is not installed",
            "pip install 'edge-ml-toolkit[camera]' (opencv-python-headless)",
        ) from exc
    return cv2


class OpenCVCapture:
    """A URL or video file through OpenCV's FFmpeg backend."""

    bgr = True

    def __init__(self, target: str) -> None:
        cv2 = require_cv2()
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            OPEN_TIMEOUT_MS,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            OPEN_TIMEOUT_MS,
        ]
        self.cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        if not self.cap.isOpened():
            self.cap.release()
            raise StreamError(
                f"cannot open {redact(target)}",
                "check the URL (scheme, host, port, path, credentials) and that the camera or server is up; "
                "test it with: ffprobe URL",
            )
        self.cap.set(
            cv2.CAP_PROP_BUFFERSIZE, 1
        )  # ignored by some backends; the reader thread is the real fix
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def read(self) -> tuple[bool, np.ndarray | None]:
        ok, frame = self.cap.read()
        return (True, frame) if ok and frame is not None else (False, None)

    def release(self) -> None:
        self.cap.release()


class PiCameraCapture:
    """The Pi Camera Module through picamera2 (libcamera). Its ``RGB888`` format is B, G, R in memory."""

    bgr = True
    fps = 0.0

    def __init__(self, index: int = 0, size: tuple[int, int] = (640, 480), module: Any = None) -> None:
        if module is None:
            try:
                import picamera2 as module  # type: ignore[no-redef]
            except ImportError as exc:
                raise StreamError(
                    "--source picamera needs picamera2, which is not installed",
                    "on Raspberry Pi OS: sudo apt install python3-picamera2, and create the agent's venv with "
                    "--system-site-packages (picamera2 is not on PyPI in a usable form)",
                ) from exc
        try:
            self.cam = module.Picamera2(index)
            self.cam.configure(self.cam.create_video_configuration(main={"size": size, "format": "RGB888"}))
            self.cam.start()
        except (RuntimeError, IndexError, OSError) as exc:
            raise StreamError(
                f"Pi camera {index} cannot be started: {exc}",
                "check the ribbon cable, that the camera shows in `rpicam-hello --list-cameras`, and that no "
                "other process holds it",
            ) from exc

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:
            return True, self.cam.capture_array("main")
        except RuntimeError:
            return False, None

    def release(self) -> None:
        try:
            self.cam.stop()
        finally:
            self.cam.close()


@dataclass(frozen=True)
class Frame:
    pixels: np.ndarray
    bgr: bool
    seq: int  # 1, 2, ... over the source's life (reconnects included)
    captured_mono: float  # time.monotonic() when read
    captured_at: float  # time.time() when read

    def image(self) -> Image.Image:
        px = self.pixels[..., ::-1] if self.bgr and self.pixels.ndim == 3 else self.pixels
        return Image.fromarray(np.ascontiguousarray(px))


def motion(a: np.ndarray, b: np.ndarray) -> float:
    """How different two frames are: mean absolute difference of ~32-pixel-wide grayscale thumbnails,
    0 (identical) to 1. Downscaling first ignores sensor noise and costs microseconds."""
    return float(np.abs(_thumb(a) - _thumb(b)).mean() / 255.0)


def _thumb(px: np.ndarray) -> np.ndarray:
    step = max(1, px.shape[1] // 32)
    small = px[::step, ::step].astype(np.float32)
    return small.mean(axis=2) if small.ndim == 3 else small


class StreamSource:
    """See the module docstring. ``opener`` opens the stream (a seam: tests pass fakes for picamera2).

    ``motion_threshold`` (0-1): skip frames that differ from the last frame handed out by less than this
    (:func:`motion`), Frigate's motion gating: no inference while nothing moves."""

    def __init__(
        self,
        opener: Opener,
        description: str,
        *,
        fps: float | None = None,
        finite: bool = False,
        backoff_s: tuple[float, float] = BACKOFF_S,
        on_event: EventHook | None = None,
        motion_threshold: float | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        if motion_threshold is not None and not 0 <= motion_threshold <= 1:
            raise StreamError(
                f"--motion-threshold must be between 0 and 1; received {motion_threshold}",
                "e.g. 0.02: skip frames that differ by less than 2 % from the last one inferred",
            )
        if fps is not None and fps <= 0:
            raise StreamError(
                f"--fps must be > 0; received {fps}", "omit it to take frames as fast as the model runs"
            )
        self.opener = opener
        self.description = description
        self.live = True  # the agent reads no frame ahead of the interpreter
        self.fps = fps
        self.finite = finite  # a video file: replayed at its own rate, ends the source at its end
        self.backoff_s = backoff_s
        self.on_event = on_event
        self.motion_threshold = motion_threshold
        self.connect_timeout_s = connect_timeout_s  # --once only: how long to wait for the first frame
        self.frames_still = 0  # skipped by the motion gate
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._taken_seq = 0
        self._ended = False
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._times: deque[float] = deque(maxlen=60)
        self.frames_read = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.connected = False
        self.last_error = ""
        self._lost = False

    # -- reader thread ----------------------------------------------------------------------------
    def _event(self, kind: str, message: str) -> None:
        (log.warning if kind == "lost" else log.info)("%s: %s", self.description, message)
        if self.on_event is not None:
            try:
                self.on_event(kind, message)
            except Exception:  # a reporting failure must not kill the reader
                log.exception("%s: on_event failed", self.description)

    def _read_loop(self) -> None:
        delay = self.backoff_s[0]
        while not self._halt.is_set():
            try:
                cap = self.opener()
            except EdgeError as exc:
                self._lose(exc.what)
                if self.finite:
                    break
                self._halt.wait(delay)
                delay = min(delay * 2, self.backoff_s[1])
                continue
            if self._pump(cap):
                delay = self.backoff_s[0]  # it worked for a while: the next loss starts a fresh backoff
            if self.finite or self._halt.is_set():
                break
            self._lose("the stream ended or stopped delivering frames")
            self._halt.wait(delay)
            delay = min(delay * 2, self.backoff_s[1])
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def _lose(self, what: str) -> None:
        """Report a loss once per outage (not at every failed retry)."""
        self.last_error = what
        if not self._lost:
            self._lost = True
            retry = (
                ""
                if self.finite
                else f"; reconnecting with backoff ({self.backoff_s[0]:g} s doubling to "
                f"{self.backoff_s[1]:g} s)"
            )
            self._event("lost", what + retry)

    def _pump(self, cap: Capture) -> bool:
        """Read frames until the stream fails; True if at least one came. Video files are paced."""
        got = False
        pace = 1.0 / cap.fps if self.finite and cap.fps > 0 else 0.0
        next_at = time.monotonic()
        try:
            while not self._halt.is_set():
                ok, px = cap.read()
                if not ok or px is None:
                    return got
                now = time.monotonic()
                if not got:
                    got = self.connected = True
                    was, self.last_error = self.last_error, ""  # cleared first: the event reports the state
                    if self._lost:
                        self._lost = False
                        self.reconnects += 1
                        self._event("recovered", f"stream delivering frames again (after: {was})")
                with self._cond:
                    seq = (self._latest.seq if self._latest else 0) + 1
                    if self._latest is not None and self._latest.seq > self._taken_seq:
                        self.frames_dropped += 1  # overwritten before anyone used it
                    self._latest = Frame(px, cap.bgr, seq, now, time.time())
                    self.frames_read += 1
                    self._times.append(now)
                    self._cond.notify_all()
                if pace:
                    next_at += pace
                    self._halt.wait(max(0.0, next_at - time.monotonic()))
            return got
        finally:
            self.connected = False
            try:
                cap.release()
            except Exception:
                log.debug("%s: release failed", self.description, exc_info=True)

    # -- consumer side --------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._read_loop, name="stream-reader", daemon=True)
            self._thread.start()

    def latest(self, stop: threading.Event, timeout: float | None = None) -> Frame | None:
        """The newest frame not handed out yet, waiting for one; None when stopped, ended or timed out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not stop.is_set():
                if self._latest is not None and self._latest.seq > self._taken_seq:
                    self._taken_seq = self._latest.seq
                    return self._latest
                if self._ended:
                    return None
                left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                if left <= 0:
                    return None
                self._cond.wait(left)
        return None

    def items(self, stop: threading.Event, once: bool) -> Iterator[Item]:
        self.start()
        gap = 1.0 / self.fps if self.fps else 0.0
        next_slot = time.monotonic()
        last: np.ndarray | None = None  # the last frame handed out (motion gating)
        give_up = time.monotonic() + self.connect_timeout_s if once else None
        while not stop.is_set():
            if gap:  # the --fps cap: wait for the slot, then take whatever is newest *then*
                wait = next_slot - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    return
            frame = self.latest(stop, None if give_up is None else max(0.0, give_up - time.monotonic()))
            if frame is None:
                if give_up is not None and not self._ended and not stop.is_set():
                    raise self._open_timeout()
                if self._ended and not stop.is_set() and not once:
                    stop.wait()  # a finished video file: keep the agent up (commands, metrics) until stopped
                return
            if (
                self.motion_threshold
                and last is not None
                and motion(frame.pixels, last) < self.motion_threshold
            ):
                self.frames_still += 1
                continue
            last = frame.pixels
            next_slot = time.monotonic() + gap  # hand-outs at least 1/fps apart
            yield Item(
                f"{self.description}#{frame.seq}",
                frame.image(),
                meta={
                    "captured_at": frame.captured_at,
                    "captured_mono": frame.captured_mono,
                    "frame": frame.seq,
                },
            )
            if once:
                return

    def _open_timeout(self) -> StreamOpenTimeout:
        return StreamOpenTimeout(
            f"could not open the stream {self.description} after {self.connect_timeout_s:g} s "
            f"(--once gives up; a long-running agent keeps retrying); last error: "
            f"{self.last_error or 'connected, but no frame arrived'}",
            "check the URL (host, port, path), the credentials and that the camera is streaming "
            "(test it with: ffprobe URL); raise --connect-timeout if it is only slow to start",
        )

    def stats(self) -> dict[str, Any]:
        """For the metrics message."""
        with self._cond:
            t = list(self._times)
        recent = [x for x in t if x >= time.monotonic() - 5.0]
        fps = (
            (len(recent) - 1) / (recent[-1] - recent[0])
            if len(recent) >= 2 and recent[-1] > recent[0]
            else 0.0
        )
        return {
            "stream_fps": round(fps, 2),
            "frames_read": self.frames_read,
            "frames_dropped": self.frames_dropped,
            "frames_still": self.frames_still,
            "reconnects": self.reconnects,
            "connected": self.connected,
        }

    def link(self) -> dict[str, Any]:
        """For the status message: is the stream delivering, and if not, why."""
        return {"connected": self.connected, "reconnects": self.reconnects, "last_error": self.last_error}

    def done(self, item: Item) -> None:
        pass

    def close(self) -> None:
        self._halt.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            # read() returns within FFmpeg's read timeout; the thread is a daemon past that
            self._thread.join(timeout=OPEN_TIMEOUT_MS / 1000 + 1)


def open_stream(
    spec: str,
    *,
    fps: float | None = None,
    on_event: EventHook | None = None,
    motion_threshold: float | None = None,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    picamera_module: Any = None,
) -> StreamSource:
    """The source for ``--source URL|VIDEO_FILE|picamera[:N]``."""
    kind = stream_kind(spec)
    common: dict[str, Any] = {
        "fps": fps,
        "on_event": on_event,
        "motion_threshold": motion_threshold,
        "connect_timeout_s": connect_timeout_s,
    }
    if kind == "picamera":
        m = _PICAMERA.match(spec)
        index = int(m.group(1) or 0) if m else 0
        return StreamSource(
            lambda: PiCameraCapture(index, module=picamera_module), f"picamera:{index}", **common
        )
    if kind == "url":
        require_cv2()  # fail at start-up, not in the reader thread
        return StreamSource(lambda: OpenCVCapture(spec), redact(spec), **common)
    if kind == "video":
        require_cv2()
        return StreamSource(lambda: OpenCVCapture(spec), f"video:{spec}", finite=True, **common)
    raise StreamError(
        f"--source {spec!r} is not a stream",
        "use rtsp://..., http(s)://..., a video file (.mp4, .mkv, ...) or picamera[:N]",
    )
