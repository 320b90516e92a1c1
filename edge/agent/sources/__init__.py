"""Input sources: ``--source`` is a file, a directory, ``mqtt``, ``camera[:N]``, or a live stream
(``rtsp://``, ``http(s)://``, a video file, ``picamera[:N]``: :mod:`edge.agent.sources.stream`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edge.agent.sources.base import Item, Source
from edge.errors import EdgeError

_CAMERA = re.compile(r"^camera(?::(\d+))?$")


class SourceError(EdgeError):
    pass


def source_kind(spec: str) -> str:
    if spec == "mqtt":
        return "mqtt"
    if _CAMERA.match(spec):
        return "camera"
    from edge.agent.sources.stream import stream_kind

    if stream_kind(spec) is not None:
        return "stream"
    p = Path(spec)
    if p.is_dir():
        return "directory"
    if p.is_file():
        return "file"
    raise SourceError(
        f"--source {spec!r} is neither an existing file or directory, nor 'mqtt', 'camera[:N]', "
        "'picamera[:N]' or an rtsp:// / http(s):// URL",
        "check the path exists (relative to the current directory), or use mqtt / camera:0 / a stream URL",
    )


def open_source(
    spec: str,
    *,
    state_dir: Path,
    client: Any,
    infer_topic: str,
    cfg: Any,
    on_refused: Any = None,
    on_stream_event: Any = None,
) -> Source:
    kind = source_kind(spec)
    if kind == "stream":
        from edge.agent.sources.stream import open_stream

        return open_stream(
            spec,
            fps=cfg.fps,
            on_event=on_stream_event,
            motion_threshold=cfg.motion_threshold,
            connect_timeout_s=cfg.connect_timeout_s,
        )
    if kind == "file":
        from edge.agent.sources.file import FileSource

        return FileSource(Path(spec))
    if kind == "directory":
        from edge.agent.sources.directory import DirectorySource

        return DirectorySource(Path(spec), state_dir, cfg.poll_interval_s, cfg.settle_s)
    if kind == "mqtt":
        from edge.agent.sources.mqtt import MqttSource

        return MqttSource(
            client,
            infer_topic,
            cfg.queue_size,
            on_refused,
            max_request_bytes=cfg.max_request_bytes,
            max_queue_bytes=cfg.max_queue_bytes,
        )
    from edge.agent.sources.camera import open_camera

    m = _CAMERA.match(spec)
    assert m
    return open_camera(
        int(m.group(1) or 0),
        fps=cfg.fps,
        interval_s=cfg.camera_interval_s,
        on_event=on_stream_event,
        motion_threshold=cfg.motion_threshold,
        connect_timeout_s=cfg.connect_timeout_s,
    )


__all__ = ["Item", "Source", "SourceError", "open_source", "source_kind"]
