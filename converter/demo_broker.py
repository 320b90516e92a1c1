"""The throw-away local MQTT broker ``edge-demo`` starts when it is not given one.

mosquitto when it is on PATH, else amqtt, a pure-Python broker (the ``demo`` extra:
``pip install 'edge-ml-toolkit[demo]'``). amqtt speaks MQTT 3.1.1 only, so ``protocol`` tells the
demo which MQTT version its agent must use. Each broker is its own process on a free loopback port,
stopped with the demo. The device never starts a broker, so this lives on the host side.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError

KINDS = ("auto", "mosquitto", "amqtt")
HOST = "127.0.0.1"


@dataclass
class LocalBroker:
    name: str
    port: int
    protocol: int  # what the agent must speak to it: 5 (MQTT 5) or 311 (MQTT 3.1.1)
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto")


def amqtt_installed() -> bool:
    return importlib.util.find_spec("amqtt") is not None


def start(kind: str, workdir: Path) -> tuple[LocalBroker, str]:
    """Start the broker ``kind`` asks for (``auto``: mosquitto when on PATH, else amqtt); returns it
    and why it was chosen."""
    workdir.mkdir(parents=True, exist_ok=True)
    exe = mosquitto_path()
    if kind == "mosquitto" or (kind == "auto" and exe):
        if exe is None:
            raise EdgeError(
                "--broker-kind mosquitto, but mosquitto is not on PATH",
                "apt install mosquitto (Debian puts it in /usr/sbin: add that to PATH), "
                "or use --broker-kind amqtt",
            )
        return _start_mosquitto(exe, workdir), "mosquitto is on PATH" if kind == "auto" else kind
    if not amqtt_installed():
        raise EdgeError(
            "no MQTT broker to start: mosquitto is not on PATH and amqtt is not installed",
            "apt install mosquitto, or pip install 'edge-ml-toolkit[demo]' (amqtt), "
            "or give a running broker with --broker mqtt://HOST:PORT",
        )
    why = "mosquitto is not on PATH" if kind == "auto" else "--broker-kind amqtt"
    return _start_amqtt(workdir), why


def _start_mosquitto(exe: str, workdir: Path) -> LocalBroker:
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    # mosquitto's default max_queued_messages (1000) silently drops QoS 1 messages to a slow subscriber
    conf.write_text(
        f"listener {port} {HOST}\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_inflight_messages 0\n"
        "set_tcp_nodelay true\n"  # Nagle + delayed ACK add ~40 ms to each request/answer
    )
    return _launch("mosquitto", [exe, "-c", str(conf)], port, 5, workdir / "mosquitto.log")


def _start_amqtt(workdir: Path) -> LocalBroker:
    port = _free_port()
    conf = workdir / "amqtt.yaml"
    config = {  # YAML is a superset of JSON
        "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    conf.write_text(json.dumps(config, indent=2) + "\n")
    cmd = [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]
    return _launch("amqtt", cmd, port, 311, workdir / "amqtt.log")


def _launch(name: str, cmd: list[str], port: int, protocol: int, log: Path) -> LocalBroker:
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    broker = LocalBroker(name, port, protocol, log, proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return broker
        except OSError:
            time.sleep(0.05)
    broker.stop()
    raise EdgeError(
        f"{name} did not listen on {HOST}:{port}: {log.read_text(errors='replace')[-2000:]}",
        f"see {log}; or give a running broker with --broker mqtt://HOST:PORT",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])
