"""Start a throw-away local MQTT broker (mosquitto) on a free loopback port, for the test-suite
and the benchmarks, which must talk to a real broker.

It lives with the tests: the device never starts a broker (``edge-demo`` has its own starter,
``converter.demo_broker``). Mosquitto's default ``max_queued_messages`` (1000)
silently drops QoS 1 messages to a slow subscriber, so it is lifted here.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import EdgeError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@dataclass
class Mosquitto:
    """A mosquitto process; ``restart()`` brings it back on the same port (for outage tests)."""

    host: str = "127.0.0.1"
    port: int = 0
    extra_conf: str = ""
    # Keep sessions and queued QoS 1 messages across a SIGKILL (saved on every change), as a
    # production broker configured for store-and-forward would.
    persistent: bool = False
    # Replaces ``allow_anonymous true`` right after the listener line: TLS, password_file, acl_file...
    listener_conf: str | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="edge-mosquitto-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> Mosquitto:
        exe = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
        )
        if exe is None:
            raise EdgeError("mosquitto is not installed", "apt install mosquitto mosquitto-clients")
        if not self.port:
            self.port = free_port(self.host)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            + ("allow_anonymous true" if self.listener_conf is None else self.listener_conf)
            + "\n"
            + (
                f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"
                "autosave_on_changes true\n"
                if self.persistent
                else "persistence false\n"
            )
            + "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            # Nagle + delayed ACK add ~40 ms to a lone request/answer (docs/transport.md)
            "set_tcp_nodelay true\n"
            f"{self.extra_conf}\n"
        )
        log = open(self.workdir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        if not wait_port(self.host, self.port):
            self.stop()
            raise EdgeError(
                f"mosquitto did not listen on {self.host}:{self.port}: "
                f"{(self.workdir / 'mosquitto.log').read_text(errors='replace')[-2000:]}",
                "is the port taken? pick another one",
            )
        return self

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye, as on a power cut."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
