"""A live RTSP camera for the stream tests: ``/usr/bin/python3 rtsp_server.py PORT FPS IMAGE.jpg``.

GStreamer's own RTSP server (gst-rtsp-server, Debian's ``gir1.2-gst-rtsp-server-1.0``) driven through
the system Python's gi bindings (``python3-gi``; PyGObject is not in the toolkit's venv), so it runs
under the system interpreter, in its own process that a test can kill and restart on the same port.

Serves ``rtsp://127.0.0.1:PORT/live``: the JPEG image, re-encoded at FPS as a live (clock-paced) RTP/JPEG
stream (RFC 2435: no H.264 encoder needed; the image's sides must be multiples of 8). Prints "ready" once
the port is bound.
"""

from __future__ import annotations

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, fps, image = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    Gst.init(None)
    factory = GstRtspServer.RTSPMediaFactory()
    # imagefreeze is-live: one buffer per 1/FPS by the clock (multifilesrc would send as fast as it can)
    factory.set_launch(
        f"( filesrc location={image} ! jpegdec ! imagefreeze is-live=true ! video/x-raw,framerate={fps}/1 "
        "! jpegenc quality=90 ! rtpjpegpay name=pay0 pt=26 )"
    )
    factory.set_shared(True)  # one pipeline for every client, as a camera has
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    server.get_mount_points().add_factory("/live", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
