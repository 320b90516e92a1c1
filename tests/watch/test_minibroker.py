"""The embedded MQTT 3.1.1 broker (edge-demo's fallback without mosquitto), with real paho clients,
a raw socket for the Last Will, and the real agent + edge-watch on top."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge.contract import schemas
from edge.minibroker import MiniBroker, topic_matches
from tests.conftest import ROOT, subprocess_env


def client(
    broker: MiniBroker, *subs: str, will: tuple[str, bytes] | None = None, protocol: int = mqtt.MQTTv311
) -> tuple[mqtt.Client, list[mqtt.MQTTMessage], threading.Event]:
    got: list[mqtt.MQTTMessage] = []
    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
    if will:
        c.will_set(will[0], will[1], qos=1, retain=True)
    c.on_connect = lambda cl, *_: cl.subscribe([(s, 1) for s in subs]) if subs else ready.set()
    c.on_subscribe = lambda *_: ready.set()
    c.on_message = lambda _c, _u, m: got.append(m)
    c.connect(broker.host, broker.port, keepalive=5)
    c.loop_start()
    return c, got, ready


def wait(pred: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_topic_matching() -> None:
    assert topic_matches("edge/+/status", "edge/pi/status")
    assert not topic_matches("edge/+/status", "edge/pi/x/status")
    assert topic_matches("edge/#", "edge") and topic_matches("edge/#", "edge/a/b")
    assert topic_matches("#", "a/b") and not topic_matches("#", "$SYS/x")
    assert not topic_matches("edge/pi", "edge/pi/status")


def test_pubsub_qos_retained_and_last_will() -> None:
    with MiniBroker() as broker:
        pub, _, ready = client(broker)
        assert ready.wait(5)
        pub.publish("edge/a/status", b"retained-1", qos=1, retain=True).wait_for_publish(5)
        pub.publish("edge/b/status", b"gone", qos=1, retain=True).wait_for_publish(5)
        pub.publish("edge/b/status", b"", qos=1, retain=True).wait_for_publish(5)  # deletes it
        sub, got, ready = client(broker, "edge/+/status", "edge/a/#")
        assert ready.wait(5)
        wait(lambda: len(got) == 1)
        assert (got[0].topic, got[0].payload, got[0].retain) == ("edge/a/status", b"retained-1", True)
        pub.publish("edge/a/predictions", b"q0", qos=0).wait_for_publish(5)
        pub.publish("edge/a/status", b"live", qos=1).wait_for_publish(5)
        pub.publish("other/x", b"no", qos=1).wait_for_publish(5)
        wait(lambda: len(got) == 3)
        time.sleep(0.2)
        # one copy per subscriber even when two of its filters match; live messages are not flagged retained
        assert [(m.topic, m.payload, m.retain) for m in got[1:]] == [
            ("edge/a/predictions", b"q0", False),
            ("edge/a/status", b"live", False),
        ]
        assert got[2].qos == 1

        # Last Will: a client that vanishes without DISCONNECT
        raw = socket.create_connection((broker.host, broker.port))
        will_topic, will_msg = b"edge/w/availability", b"offline"
        var = b"\x00\x04MQTT\x04" + bytes([0x02 | 0x04 | 0x08 | 0x20]) + struct.pack("!H", 30)
        payload = b"".join(struct.pack("!H", len(x)) + x for x in (b"raw", will_topic, will_msg))
        body = var + payload
        raw.sendall(bytes([0x10, len(body)]) + body)
        assert raw.recv(4) == b"\x20\x02\x00\x00"  # CONNACK accepted
        sub.subscribe("edge/w/#", 1)
        time.sleep(0.3)
        raw.close()
        wait(lambda: any(m.topic == "edge/w/availability" for m in got))
        assert broker.retained["edge/w/availability"][0] == b"offline"
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()


def test_mqtt5_clients_are_refused_clearly() -> None:
    with MiniBroker() as broker:
        raw = socket.create_connection((broker.host, broker.port))
        body = b"\x00\x04MQTT\x05\x02\x00\x1e\x00" + b"\x00\x01x"
        raw.sendall(bytes([0x10, len(body)]) + body)
        assert raw.recv(4) == b"\x20\x02\x00\x01"  # unacceptable protocol version
        raw.close()


def test_real_agent_and_edge_watch_over_the_embedded_broker(coral: Path, tmp_path: Path, spawn: Any) -> None:
    with MiniBroker() as broker:
        watch = spawn("--broker", broker.url, "--json", "--count", "3", "--timeout", "60")
        time.sleep(1.0)  # edge-watch subscribed (nothing retained yet to prove it)
        log = tmp_path / "agent.log"
        cfg = tmp_path / "agent.toml"
        cfg.write_text("[mqtt]\nprotocol = 311\n")  # the embedded broker speaks MQTT 3.1.1 only
        with open(log, "wb") as fh:
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "edge",
                    "run",
                    "--config",
                    str(cfg),
                    "--broker",
                    broker.url,
                    "--device-id",
                    "mini",
                    "--state-dir",
                    str(tmp_path / "state"),
                    "--once",
                    "--source",
                    str(coral / "cat.bmp"),
                    "--model",
                    str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                timeout=120,
                env=subprocess_env(),
            )
        assert r.returncode == 0, log.read_text()[-3000:]
        rc, lines, err = watch.finish(timeout=60)
        assert rc == 0, err
        kinds = [json.loads(line)["kind"] for line in lines]
        assert kinds == ["availability", "status", "predictions"]
        for line in lines:
            m = json.loads(line)
            assert schemas.problems(m["kind"], m["payload"]) == []
        # what the agent left behind: retained status + a clean offline + discovery configs
        assert broker.retained["edge/mini/availability"][0] == b"offline"
        assert json.loads(broker.retained["edge/mini/status"][0])["device"] == "mini"
        assert any(t.startswith("homeassistant/sensor/edge_mini/") for t in broker.retained)
