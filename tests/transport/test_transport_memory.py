"""The in-memory transport behaves like the broker the agent relies on (where it matters to the agent)."""

from __future__ import annotations

import threading

from edge.transport.base import Transport
from edge.transport.client import Message, MqttClient, Will
from edge.transport.memory import MemoryBroker


def _collector() -> tuple[list[Message], threading.Condition]:
    return [], threading.Condition()


def test_filters_retained_will_and_acks() -> None:
    broker = MemoryBroker()
    try:
        pub = broker.client("pub", will=Will("edge/d/availability", b"offline"))
        assert pub.publish("edge/d/x", b"early", 1) is None  # not connected: nothing is queued
        got: list[Message] = []
        acks: list[int] = []
        connects: list[int] = []
        sub = broker.client("sub")
        sub.subscribe("edge/+/availability", got.append)
        sub.subscribe("edge/d/#", got.append)
        sub.start()
        pub.on_puback(acks.append)
        pub.on_connect(lambda: connects.append(pub.generation))
        pub.start()
        pub.publish("edge/d/availability", b"online", 1, True)
        token = pub.publish("edge/d/status", b"{}", 1, True)
        pub.publish("other/topic", b"no", 0)
        broker.settle()
        assert connects == [1] and acks == [acks[0], token] and len(acks) == 2
        assert [(m.topic, m.payload, m.retain) for m in got] == [
            ("edge/d/availability", b"online", False),
            ("edge/d/availability", b"online", False),  # matched by both filters, as in MQTT
            ("edge/d/status", b"{}", False),
        ]
        late: list[Message] = []
        sub.subscribe("edge/d/status", late.append)  # a retained message reaches a late subscriber
        pub.drop()  # no goodbye: the broker publishes the Last Will (retained)
        broker.settle()
        assert [(m.payload, m.retain) for m in late] == [(b"{}", True)]
        assert broker.retained["edge/d/availability"].payload == b"offline"
        assert not pub.connected and pub.last_error and pub.publish("edge/d/x", b"", 1) is None
        pub.start()
        broker.settle()
        assert pub.generation == 2 and connects == [1, 2]
    finally:
        broker.close()


def test_both_clients_are_transports() -> None:
    broker = MemoryBroker()
    try:
        assert isinstance(broker.client("c"), Transport)
        assert isinstance(MqttClient("mqtt://127.0.0.1:1", "c"), Transport)
    finally:
        broker.close()
