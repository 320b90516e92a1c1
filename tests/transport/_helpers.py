"""Transport test helpers: a real paho subscriber that survives broker restarts; child processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho

from tests.conftest import subprocess_env
from tests.support.broker import Mosquitto

CHILD = Path(__file__).with_name("child.py")


class Collector:
    """A plain paho subscriber (MQTT 5) that reconnects quickly and re-subscribes, recording everything."""

    def __init__(self, broker: Mosquitto, topic: str, persistent: bool = False) -> None:
        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []
        self.correlation: list[tuple[bytes, bytes | None]] = []  # (payload, CorrelationData)
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"collector-{topic}-{persistent}",
            protocol=paho.MQTTv5,
        )
        # Faster than the device clients in the tests, so it is back first after a broker restart.
        self.client.reconnect_delay_set(0.05, 0.1)  # type: ignore[arg-type]  # floats work at run time
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_disconnect = lambda *a: self.subscribed.clear()
        self.client.on_message = self._on_message
        # persistent: a session the broker keeps (and queues for) across restarts when it has
        # persistence on, so the test does not race the device to the broker after a restart.
        props = None
        if persistent:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10), "test subscriber could not subscribe"

    def _on_connect(self, client: paho.Client, *_: object) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            props = getattr(msg, "properties", None)
            self.correlation.append((bytes(msg.payload), getattr(props, "CorrelationData", None)))

    def json(self, topic_suffix: str = "") -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(topic_suffix)]

    def seqs(self, topic_suffix: str = "/predictions") -> list[int]:
        return [m["seq"] for m in self.json(topic_suffix)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def start_child(*args: str) -> subprocess.Popen[str]:
    """``python tests/transport/child.py args`` with this checkout importable; stdout is a pipe of lines."""
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        bufsize=1,
    )


def read_until(proc: subprocess.Popen[str], predicate: Callable[[str], bool], timeout: float) -> list[str]:
    """Lines from the child until one satisfies ``predicate``; fails with the child's stderr otherwise."""
    lines: list[str] = []
    box: list[str] = []
    deadline = time.monotonic() + timeout

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if predicate(line.rstrip("\n")):
                box.append(line)
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    if not box:
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(
            f"child did not print the expected line within {timeout}s; "
            f"got {lines[-5:]}; stderr:\n{err[-3000:]}"
        )
    return lines
