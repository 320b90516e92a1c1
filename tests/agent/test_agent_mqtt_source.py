"""--source mqtt: inference requests over MQTT 5 (correlation data) and MQTT 3.1.1 (infer/<id>)."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.agent import agent_command
from tests.support.broker import Mosquitto

CAT_CLASSES = range(282, 287)


def test_mqtt_requests_are_answered_with_their_correlation_id(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, capture, agents
) -> None:
    sub5 = capture("edge/m1/predictions", "edge/m1/errors", "edge/m1/status", "replies/me")
    sub311 = capture("edge/m1/predictions", protocol=mqtt.MQTTv311)
    agent = agents(
        agent_command(
            mosquitto,
            "m1",
            tmp_path / "state",
            "--model",
            str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
            "--source",
            "mqtt",
        ),
        tmp_path / "agent.log",
    )
    sub5.wait(lambda s: s.on("edge/m1/status"), 30, "status")
    cat = (coral / "cat.bmp").read_bytes()

    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = b"req-5"
    props.ResponseTopic = "replies/me"
    sub5.publish("edge/m1/infer", cat, properties=props)
    sub311.publish("edge/m1/infer/req-311", cat)
    sub311.publish("edge/m1/infer/req-junk", b"GIF89a but not really")

    preds = sub5.wait(
        lambda s: len(s.on("edge/m1/predictions")) >= 2 and s.json("edge/m1/predictions"),
        30,
        "two predictions",
    )
    assert sorted(p["source"] for p in preds) == ["req-311", "req-5"]
    assert all(any(c["index"] in CAT_CLASSES for c in p["top_k"][:3]) for p in preds)
    reply = sub5.wait(lambda s: s.on("replies/me"), 30, "the direct reply")[0]
    assert reply.properties.CorrelationData == b"req-5"
    err = sub5.wait(lambda s: s.json("edge/m1/errors"), 30, "an error for the junk request")[0]
    assert err["source"] == "req-junk" and "cannot be decoded" in err["error"]
    assert agent.alive()
    assert agent.terminate() == 0
