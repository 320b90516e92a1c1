"""``edge-watch --web``: a live dashboard over the standard library only.

One static page (edge/watch/dashboard.html: inline JS and SVG, no build step,
no CDN, so it works on an air-gapped LAN) reads ``/api/state`` once and then
follows ``/events``, a server-sent-events stream of fleet snapshots produced
by the same :class:`~edge.watch.state.Fleet` as the terminal table. Devices that publish thumbnails
(``edge-agent --publish-thumbnail``) get their last frame at ``/api/frame/<device>``, with the
prediction it shows, which the page draws boxes, keypoints and segments over.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote

from edge.errors import EdgeError
from edge.watch.state import Fleet

# An SSE stream ends after this long and the browser reconnects by itself (``retry``):
# no handler thread lives forever behind a proxy that lost the client.
STREAM_SECONDS = 60.0
MIN_EVENT_GAP_S = 0.25
# A device's last thumbnail and the results drawn over it (bounded: edge.watch.state.THUMBNAIL_MAX_BYTES)
FRAME_PATH = "/api/frame/"
TEXT = "text/plain; charset=utf-8"


def page() -> bytes:
    return resources.files("edge.watch").joinpath("dashboard.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the table owns the terminal

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, self.server.page, "text/html; charset=utf-8")
        elif path == "/api/state":
            self._send(200, json.dumps(self._state()).encode(), "application/json")
        elif path == "/events":
            self._events()
        elif path.startswith(FRAME_PATH):
            frame = self.server.fleet.frame(unquote(path[len(FRAME_PATH) :]))
            if frame is None:
                self._send(
                    404, b"no thumbnail from this device (is it run with --publish-thumbnail?)\n", TEXT
                )
            else:
                self._send(200, json.dumps(frame, separators=(",", ":")).encode(), "application/json")
        else:
            self._send(404, b"not found: try / or /api/state or /events or /api/frame/<device>\n", TEXT)

    def _state(self) -> dict[str, Any]:
        snap = self.server.fleet.snapshot()
        snap["broker"] = self.server.broker
        return snap

    def _events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        fleet, stop = self.server.fleet, self.server.stopping
        end = time.monotonic() + self.server.stream_seconds
        version = -1
        try:
            self.wfile.write(b"retry: 1000\n\n")
            while not stop.is_set() and time.monotonic() < end:
                now_version = fleet.wait_change(version, timeout=1.0)
                if now_version != version:
                    version = now_version
                    data = json.dumps(self._state(), separators=(",", ":"))
                    self.wfile.write(f"event: state\ndata: {data}\n\n".encode())
                    self.wfile.flush()
                    stop.wait(MIN_EVENT_GAP_S)  # a burst of messages becomes one redraw
                else:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], fleet: Fleet, broker: str, stream_seconds: float) -> None:
        self.fleet = fleet
        self.stream_seconds = stream_seconds
        self.broker = broker
        self.page = page()
        self.stopping = threading.Event()
        super().__init__(addr, _Handler)


class Dashboard:
    """The HTTP server in a background thread; ``port=0`` picks a free port."""

    def __init__(
        self,
        fleet: Fleet,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        broker: str = "",
        stream_seconds: float = STREAM_SECONDS,
    ) -> None:
        try:
            self.server = _Server((host, port), fleet, broker, stream_seconds)
        except OSError as err:
            raise EdgeError(
                f"cannot serve the dashboard on {host}:{port}: {err}",
                "pick another port with --web HOST:PORT",
            ) from err
        self._thread = threading.Thread(target=self.server.serve_forever, name="edge-watch-web", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> Dashboard:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.stopping.set()
        self.server.shutdown()
        self.server.server_close()
