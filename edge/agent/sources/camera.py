"""A camera on ``/dev/videoN`` (``--source camera`` or ``camera:N``) through OpenCV's V4L2 backend (the
``camera`` extra), read like every live stream: :class:`edge.agent.sources.stream.StreamSource`.

Only the opener differs from an RTSP or HTTP stream. One reader thread keeps the newest frame; the agent
takes it when the model is free (at most ``--fps`` a second, else one every ``source.camera_interval_s``);
``frames_dropped``/``stream_fps`` go into metrics; a camera that stops delivering (unplugged, driver
error) is reported once on ``errors`` and reopened with backoff, and the agent keeps running.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from edge.agent.sources.stream import (
    CONNECT_TIMEOUT_S,
    EventHook,
    OpenCVCapture,
    StreamError,
    StreamSource,
    require_cv2,
)


class DeviceCapture(OpenCVCapture):
    """``/dev/video<index>``: the device opener, the one part the tests cannot run without a camera."""

    def __init__(self, index: int) -> None:
        cv2 = require_cv2("--source camera needs")
        # V4L2 by name: CAP_ANY may pick GStreamer, which queues frames of its own. No open/read timeout
        # parameters: V4L2 refuses to open with parameters it does not know.
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        self.cap = cv2.VideoCapture(index, backend)
        if not self.cap.isOpened():
            self.cap.release()
            raise StreamError(
                f"camera {index} (/dev/video{index}) cannot be opened",
                "check it is connected (ls /dev/video*), that this user may read it (group video), that no "
                "other process holds it, and the index in camera:N",
            )
        # V4L2 honours this: the driver keeps one filled buffer, not four, so a read is never 4 frames old
        self.cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)


def open_camera(
    index: int,
    *,
    fps: float | None = None,
    interval_s: float = 0.0,
    on_event: EventHook | None = None,
    motion_threshold: float | None = None,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    opener: Callable[[int], Any] = DeviceCapture,
) -> StreamSource:
    """The source for ``--source camera:N``. ``fps`` (``--fps``) caps the rate; without it
    ``interval_s`` (``source.camera_interval_s``, 0 = no cap) does. ``opener`` is the seam that opens
    the device (tests hand it a real stream instead)."""
    require_cv2("--source camera needs")  # fail at start-up, not in the reader thread
    if fps is None and interval_s > 0:
        fps = 1.0 / interval_s
    return StreamSource(
        lambda: opener(index),
        f"camera:{index}",
        fps=fps,
        on_event=on_event,
        motion_threshold=motion_threshold,
        connect_timeout_s=connect_timeout_s,
    )
