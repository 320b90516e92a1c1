from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import subprocess_env
from tests.support.broker import Mosquitto


def publish(broker: Mosquitto, messages: Iterable[tuple[str, Any]], *, retain: bool = False) -> None:
    """Publish (topic, payload) pairs at QoS 1 with a real paho client; dicts are sent as JSON."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            if isinstance(payload, (dict, list)):
                payload = json.dumps(payload)
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


class Proc:
    """A child process whose stdout lines are read in the background (tests wait with a timeout)."""

    def __init__(self, args: list[str]) -> None:
        self.popen = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env()
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)

    def line(self, timeout: float = 15) -> str:
        return self.lines.get(timeout=timeout)

    def finish(self, timeout: float = 30) -> tuple[int, list[str], str]:
        rc = self.popen.wait(timeout)
        assert self.popen.stderr is not None
        err = self.popen.stderr.read()
        rest = []
        while True:
            try:
                rest.append(self.lines.get(timeout=1 if not self.lines.empty() else 0.2))
            except queue.Empty:
                break
        return rc, rest, err

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def spawn() -> Iterator[Any]:
    procs: list[Proc] = []

    def start(*args: str, module: str = "edge.watch") -> Proc:
        p = Proc([sys.executable, "-m", module, *args])
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()


class Collector:
    """A real paho subscriber that keeps every message (retained ones included) on ``topics``."""

    def __init__(self, broker: Mosquitto, topics: list[str]) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "collector never subscribed"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def on(self, pattern: str) -> list[mqtt.MQTTMessage]:
        with self.cond:
            return [m for m in self.messages if mqtt.topic_matches_sub(pattern, m.topic)]

    def wait_for(self, pattern: str, n: int = 1, timeout: float = 60) -> list[mqtt.MQTTMessage]:
        import time

        deadline = time.monotonic() + timeout
        with self.cond:
            while len(found := [m for m in self.messages if mqtt.topic_matches_sub(pattern, m.topic)]) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(found)} of {n} messages on {pattern} after {timeout} s; "
                        f"topics seen: {sorted({m.topic for m in self.messages})}"
                    )
                self.cond.wait(left)
            return found

    def publish(self, topic: str, payload: str | bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector(mosquitto: Mosquitto) -> Iterator[Any]:
    made: list[Collector] = []

    def make(*topics: str) -> Collector:
        c = Collector(mosquitto, list(topics))
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
