"""A live HTTP MJPEG camera for the stream tests: ``python mjpeg_server.py PORT FPS``.

Serves ``multipart/x-mixed-replace`` JPEG frames at FPS to every client on /stream, each frame
carrying its sequence number as 16 black/white 8x8 blocks (decode with :func:`frame_number`), so a
test can tell which frame it got and how many it skipped. Frame numbers continue from the clock
(``time.monotonic() * FPS``), so a restarted server keeps counting up. Prints "ready" when listening.
"""

from __future__ import annotations

import io
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

W, H, BITS = 64, 48, 16


def frame(seq: int) -> bytes:
    px = np.full((H, W), 128, np.uint8)
    for b in range(BITS):
        r, c = divmod(b, W // 8)
        px[r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] = 255 if (seq >> b) & 1 else 0
    buf = io.BytesIO()
    Image.fromarray(px).convert("RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def frame_number(rgb: np.ndarray) -> int:
    gray = np.asarray(rgb, dtype=np.float32).mean(axis=-1) if rgb.ndim == 3 else rgb
    n = 0
    for b in range(BITS):
        r, c = divmod(b, W // 8)
        if gray[r * 8 + 2 : r * 8 + 6, c * 8 + 2 : c * 8 + 6].mean() > 128:
            n |= 1 << b
    return n


class Handler(BaseHTTPRequestHandler):
    fps = 30.0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            while True:
                now = time.monotonic()
                seq = int(now * self.fps) % (1 << BITS)
                jpeg = frame(seq)
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                self.wfile.write(f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                self.wfile.flush()
                time.sleep(max(0.0, (int(now * self.fps) + 1) / self.fps - time.monotonic()))
        except (BrokenPipeError, ConnectionResetError):
            pass


if __name__ == "__main__":
    port, Handler.fps = int(sys.argv[1]), float(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()
