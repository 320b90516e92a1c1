"""A camera through OpenCV (optional extra ``edge-ml-toolkit[camera]``): ``--source camera`` or ``camera:N``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from PIL import Image

from edge.agent.sources.base import Item
from edge.errors import EdgeError


class CameraError(EdgeError):
    pass


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise CameraError(
            "--source camera needs OpenCV, which is not installed",
            "pip install 'edge-ml-toolkit[camera]' (opencv-python-headless), or use a file, "
            "directory or mqtt source",
        ) from exc
    return cv2


class CameraSource:
    def __init__(self, index: int = 0, interval_s: float = 1.0) -> None:
        cv2 = _cv2()
        self.cv2 = cv2
        self.index = index
        self.interval_s = interval_s
        self.description = f"camera:{index}"
        self.cap = cv2.VideoCapture(index)
        if not self.cap.isOpened():
            raise CameraError(
                f"camera {index} cannot be opened",
                "check it is connected (ls /dev/video*), that this user may read it (group video), "
                "and the index in camera:N",
            )
        self.frames = 0

    def items(self, stop: threading.Event, once: bool) -> Iterator[Item]:
        while not stop.is_set():
            started = time.monotonic()
            ok, frame = self.cap.read()
            if not ok:
                raise CameraError(
                    f"camera {self.index} stopped delivering frames", "check the cable and power"
                )
            self.frames += 1
            img = Image.fromarray(self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2RGB))
            yield Item(f"camera{self.index}-{self.frames}", img)
            if once:
                return
            stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def done(self, item: Item) -> None:
        pass

    def close(self) -> None:
        self.cap.release()
