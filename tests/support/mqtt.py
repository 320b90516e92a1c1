"""Real MQTT clients for the tests: a paho capture, a one-shot publisher, the mosquitto_sub command line."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import Mosquitto

T = TypeVar("T")


class Capture:
    """Records every message on ``topics`` (wildcards allowed); re-subscribes after a broker restart.

    ``persistent``: a session the broker keeps (and queues QoS 1 for) while the capture is away, so
    nothing published between a broker restart and the re-subscription is lost to the test.
    """

    def __init__(
        self, broker: Mosquitto, *topics: str, protocol: int = mqtt.MQTTv5, persistent: bool = False
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.cond = threading.Condition()
        self.connects = 0
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"capture-{uuid.uuid4().hex[:8]}", protocol=protocol
        )
        # Faster than the device clients in the tests, so it is back first after a broker restart.
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]

        def on_connect(c: mqtt.Client, *_: Any) -> None:
            c.subscribe([(t, 1) for t in topics])

        def on_subscribe(*_: Any) -> None:
            with self.cond:
                self.connects += 1
                self.subscribed.set()
                self.cond.notify_all()

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            with self.cond:
                self.messages.append(msg)
                self.cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_disconnect = lambda *_: self.subscribed.clear()
        self.client.on_message = on_message
        if persistent:
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
        self.wait(lambda s: s.connects >= 1, 10, "the capture to subscribe")

    def wait(self, pred: Callable[[Capture], T], timeout: float, what: str = "") -> T:
        """The first truthy ``pred(self)`` within ``timeout`` seconds; fails with what arrived otherwise."""
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

    def wait_for(self, pattern: str, n: int = 1, timeout: float = 60) -> list[mqtt.MQTTMessage]:
        """At least ``n`` messages on topics matching ``pattern`` (all of them, in arrival order)."""
        return self.wait(lambda s: len(found := s.on(pattern)) >= n and found, timeout, f"{n} on {pattern}")

    def on(self, pattern: str) -> list[mqtt.MQTTMessage]:
        with self.cond:
            return [m for m in self.messages if mqtt.topic_matches_sub(pattern, m.topic)]

    def json(self, pattern: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.on(pattern)]

    def text(self, pattern: str) -> list[str]:
        return [m.payload.decode() for m in self.on(pattern)]

    def seqs(self, pattern: str = "+/+/predictions") -> list[int]:
        return [m["seq"] for m in self.json(pattern)]

    def correlation(self) -> list[tuple[bytes, bytes | None]]:
        """(payload, MQTT 5 CorrelationData) of every message."""
        with self.cond:
            return [(m.payload, getattr(m.properties, "CorrelationData", None)) for m in self.messages]

    def publish(self, topic: str, payload: bytes | str, **kw: Any) -> None:
        self.client.publish(topic, payload, qos=1, **kw).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publish(broker: Mosquitto, messages: Iterable[tuple[str, Any]], *, retain: bool = False) -> None:
    """Publish (topic, payload) pairs at QoS 1 with a real paho client; dicts and lists are sent as JSON."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
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


def mosquitto_sub(broker: Mosquitto, topic: str, *options: str) -> subprocess.Popen[str]:
    """The real command-line subscriber (``mosquitto_sub -d -q 1 -t topic options``), returned once its
    SUBACK is seen, so nothing published afterwards is missed. Its stdout mixes the debug lines and
    the payloads, one a line; read it with ``communicate()`` once ``-C``/``-W`` have ended it."""
    # stdbuf: mosquitto_sub block-buffers a pipe, and the SUBACK line must arrive now, not at exit.
    proc = subprocess.Popen(
        ["stdbuf", "-oL", "mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-d", "-q", "1"]
        + ["-t", topic, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "SUBACK" in line:
            return proc
    raise AssertionError(f"mosquitto_sub never subscribed (exit {proc.wait()})")


def json_lines(out: str) -> list[dict[str, Any]]:
    """The JSON payloads among ``mosquitto_sub -d`` output lines."""
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]
