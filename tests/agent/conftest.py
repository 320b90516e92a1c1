"""Helpers for agent tests: a paho subscriber that survives broker restarts, and agent processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import ROOT, subprocess_env
from tests.support.broker import Mosquitto


class Subscriber:
    """Collects every message on ``topics``; resubscribes after a broker restart."""

    def __init__(
        self, broker: Mosquitto, topics: list[str], protocol: int = mqtt.MQTTv5, persistent: bool = False
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.cond = threading.Condition()
        self.connects = 0
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}", protocol=protocol
        )
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            c.subscribe([(t, 1) for t in topics])

        def on_subscribe(*_a: Any) -> None:
            with self.cond:
                self.connects += 1
                self.cond.notify_all()

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            with self.cond:
                self.messages.append(msg)
                self.cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        if persistent:
            # A session the broker keeps (and queues QoS 1 for) while we are away, so nothing
            # published between a broker restart and our re-subscription is lost to the test.
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            self.client.connect_async(
                broker.host, broker.port, keepalive=10, clean_start=False, properties=props
            )
        else:
            self.client.connect_async(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        self.wait(lambda s: s.connects >= 1, 10, "subscriber never subscribed")

    def wait(self, pred: Callable[[Subscriber], Any], timeout: float, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = pred(self)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what or pred}; got "
                        f"{[(m.topic, m.payload[:200]) for m in self.messages][-20:]}"
                    )
                self.cond.wait(min(left, 0.2))

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self.cond:
            return [m for m in self.messages if m.topic == topic]

    def json(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.on(topic)]

    def text(self, topic: str) -> list[str]:
        return [m.payload.decode() for m in self.on(topic)]

    def publish(self, topic: str, payload: bytes | str, **kw: Any) -> None:
        self.client.publish(topic, payload, qos=1, **kw).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def subscriber(mosquitto: Mosquitto) -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def make(topics: list[str], **kw: Any) -> Subscriber:
        s = Subscriber(mosquitto, topics, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def agent_args(broker: Mosquitto, device: str, state: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edge",
        "run",
        "--broker",
        broker.url,
        "--device-id",
        device,
        "--state-dir",
        str(state),
        *args,
    ]


class AgentProcess:
    def __init__(
        self, args: list[str], log: Path, python: str | None = None, env: dict[str, str] | None = None
    ):
        if python:
            args = [python, *args[1:]]
        self.log = log
        self.fh = open(log, "ab")
        self.proc = subprocess.Popen(
            args, stdout=self.fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env or subprocess_env()
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # faulthandler: stacks of every thread into the log
            time.sleep(1)
            self.proc.kill()
            raise AssertionError(f"agent did not exit within {timeout}s:\n{self.output()[-4000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self) -> int:
        self.proc.terminate()
        return self.wait(30)

    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture
def agents() -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(args: list[str], log: Path, **kw: Any) -> AgentProcess:
        a = AgentProcess(args, log, **kw)
        started.append(a)
        return a

    yield start
    for a in started:
        a.kill()
        a.fh.close()
