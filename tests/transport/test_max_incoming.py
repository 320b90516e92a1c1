"""MQTT 5 Maximum Packet Size: the broker never sends the client a message larger than it accepts."""

from __future__ import annotations

import threading

import paho.mqtt.client as paho

from edge.transport import Message, MqttClient
from tests.support.broker import Mosquitto


def test_messages_over_the_limit_never_reach_the_client(mosquitto: Mosquitto) -> None:
    got: list[int] = []
    arrived = threading.Event()
    client = MqttClient(mosquitto.url, "limited", max_incoming_bytes=10_000, backoff_min=0.05)

    def on_message(msg: Message) -> None:
        got.append(len(msg.payload))
        if len(msg.payload) == 100:
            arrived.set()

    client.subscribe("in/#", on_message, 1)
    client.start()
    try:
        assert client.wait_connected(10)
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        for size in (50_000, 10_001_000, 100):  # the last one, small, proves the first two were dropped
            pub.publish("in/x", b"x" * size, qos=1).wait_for_publish(30)
        assert arrived.wait(15)
        pub.loop_stop()
    finally:
        client.stop()
    assert got == [100]
