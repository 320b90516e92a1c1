from __future__ import annotations

import getpass
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.transport import MqttClient
from edge.transport.outbox import Outbox, mark_historical
from edge.transport.spool import Spool
from tests.support.broker import Mosquitto
from tests.support.mqtt import Capture
from tests.transport._helpers import read_until, start_child

TOPIC = "edge/dev/predictions"


def prediction(i: int) -> dict:
    return {"schema": 1, "device": "dev", "source": f"img{i}.jpg", "latency_ms": {"total": 1.5}}


def assert_complete(coll: Capture, total: int) -> list[dict]:
    msgs = coll.json("+/+/predictions")
    seqs = [m["seq"] for m in msgs]
    missing = set(range(1, total + 1)) - set(seqs)
    assert not missing, f"lost {len(missing)} messages, e.g. {sorted(missing)[:10]}"
    assert max(seqs) == total
    # Every duplicate is a replay and says so.
    seen: set[int] = set()
    for m in msgs:
        if m["seq"] in seen:
            assert m.get("historical") is True, m
        seen.add(m["seq"])
    return msgs


def test_mark_historical() -> None:
    assert json.loads(mark_historical(b'{"seq":1}')) == {"seq": 1, "historical": True}
    assert mark_historical(b"online") == b"online"
    assert mark_historical(b"[1,2]") == b"[1,2]"
    assert mark_historical(b"{not json") == b"{not json"
    # The member is added in place (no re-encoding): what was there stays byte for byte.
    assert (
        mark_historical('{"a":1.10,"é":"ü"} \n'.encode()) == '{"a":1.10,"é":"ü","historical":true}'.encode()
    )
    assert mark_historical(b"{}") == b'{"historical":true}'
    assert json.loads(mark_historical(b'{"historical":false,"b":1}')) == {"historical": True, "b": 1}
    assert mark_historical(b'{"historical":true}') == b'{"historical":true}'


def test_send_rejects_what_can_never_be_published(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        box = Outbox(MqttClient("mqtt://127.0.0.1:1", "x"), spool)
        with pytest.raises(ValueError, match="wildcards"):
            box.send("edge/+/predictions", {"a": 1})
        with pytest.raises(ValueError):
            box.send("edge/x", {"a": float("nan")})
        with pytest.raises(TypeError):
            box.send("edge/x", {"a": 1}.items())  # type: ignore[arg-type]
        assert spool.depth() == 0


def test_live_messages_are_not_historical_and_qos0_bypasses_spool(
    mosquitto: Mosquitto, tmp_path: Path, capture: Callable[..., Capture]
) -> None:
    coll = capture("edge/#")
    client = MqttClient(mosquitto.url, "dev")
    with Spool(tmp_path / "s.db") as spool:
        box = Outbox(client, spool)
        box.send("edge/dev/metrics", {"x": 0}, qos=0)  # not connected yet: dropped, counted
        assert box.stats()["dropped_qos0"] == 1 and spool.depth() == 0
        box.start()
        client.start()
        assert client.wait_connected(10)
        for i in range(50):
            assert box.send(TOPIC, prediction(i), seq="predictions") == i + 1
        box.send("edge/dev/metrics", {"x": 1}, qos=0)
        box.send("edge/dev/status", {"s": 1}, retain=True)
        assert box.flush(10)
        assert coll.wait(lambda _: len(coll.seqs()) >= 50 and len(coll.json("+/+/metrics")) >= 1, 10)
        msgs = assert_complete(coll, 50)
        assert not any("historical" in m for m in msgs), "live messages must not be marked"
        assert coll.json("+/+/metrics") == [{"x": 1}]
        stats = box.stats()
        assert stats["spool_depth"] == 0 and stats["acked"] == 51 and stats["published"] == 52
        assert stats["dropped"] == 1
        box.stop()
        client.stop()


def test_broker_down_at_start_then_everything_arrives_marked(tmp_path: Path) -> None:
    broker = Mosquitto(
        workdir=tmp_path / "b",
        extra_conf=(f"persistence true\npersistence_location {tmp_path}/b/\nuser {getpass.getuser()}\n"),
    )
    broker.workdir.mkdir()
    broker.start()
    coll = Capture(broker, "edge/#", persistent=True)
    broker.stop()  # clean stop: the subscriber's session is saved and comes back with the broker
    client = MqttClient(broker.url, "dev", backoff_min=0.2, backoff_max=0.5)
    box = Outbox(client, Spool(tmp_path / "s.db"))
    try:
        box.start()
        client.start()
        deadline = time.monotonic() + 5
        while client.last_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        for i in range(40):
            box.send(TOPIC, prediction(i), seq="predictions")
        # MQTT 5 properties are spooled with the message (answers to requests keep their correlation id).
        box.send("edge/dev/answer", b"cat", properties={"CorrelationData": b"req-7", "ResponseTopic": "r/t"})
        with pytest.raises(ValueError, match="property"):
            box.send("edge/dev/answer", b"x", properties={"NoSuchProperty": 1})
        assert box.flush(0.3) is False, "nothing can be acknowledged without a broker"
        assert box.spool.depth() == 41
        broker.start()
        assert box.flush(20), box.stats()
        assert coll.wait(lambda _: len(coll.seqs()) >= 40, 10)
        msgs = assert_complete(coll, 40)
        assert all(m.get("historical") is True for m in msgs)
        assert [m["seq"] for m in msgs][:40] == list(range(1, 41)), "replay keeps the order"
        assert coll.wait(lambda _: (b"cat", b"req-7") in coll.correlation(), 5)
    finally:
        coll.close()
        box.stop()
        client.stop()
        box.spool.close()
        broker.stop()


def test_broker_sigkilled_mid_stream_nothing_lost(
    mosquitto: Mosquitto, tmp_path: Path, capture: Callable[..., Capture]
) -> None:
    total = 400
    coll = capture("edge/#")
    # The device client waits >= 1.5 s before reconnecting, the test subscriber ~0.1 s: the
    # subscriber is back before replay starts (messages the broker holds for nobody are not ours).
    client = MqttClient(mosquitto.url, "dev", backoff_min=1.5, backoff_max=2.0)
    with Spool(tmp_path / "s.db") as spool:
        box = Outbox(client, spool, max_inflight=50)
        box.start()
        client.start()
        assert client.wait_connected(10)

        def produce() -> None:
            for i in range(total):
                box.send(TOPIC, prediction(i), seq="predictions")
                time.sleep(0.004)

        producer = threading.Thread(target=produce)
        producer.start()
        assert coll.wait(lambda _: len(coll.seqs()) >= 100, 20)
        # Freeze the broker first: what is published meanwhile sits in socket buffers, un-acked,
        # and dies with the broker. Only the spool can bring it back.
        assert mosquitto.proc is not None
        mosquitto.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.3)
        stalled = box.stats()["inflight"]
        mosquitto.kill()
        assert coll.wait(lambda _: not coll.subscribed.is_set(), 5), "subscriber did not see the broker go"
        mosquitto.start()
        producer.join(30)
        assert box.flush(30), box.stats()
        assert coll.wait(lambda _: set(range(1, total + 1)) <= set(coll.seqs()), 10)
        msgs = assert_complete(coll, total)
        assert client.generation == 2
        assert stalled > 0, "the test did not catch messages in flight"
        historical = [m["seq"] for m in msgs if m.get("historical")]
        assert historical, "messages spooled during the outage must be marked historical"
        first_copy = {}
        for m in msgs:
            first_copy.setdefault(m["seq"], m)
        assert not first_copy[1].get("historical")
        box.stop()
        client.stop()


def test_agent_sigkilled_mid_stream_and_restarted_on_same_spool(
    mosquitto: Mosquitto, tmp_path: Path, capture: Callable[..., Capture]
) -> None:
    total = 300
    coll = capture("edge/#")
    spool = tmp_path / "spool.db"
    first = start_child("outbox", mosquitto.url, str(spool), "dev", str(total), "250")
    lines = read_until(first, lambda line: line.startswith("sent ") and int(line.split()[1]) >= 120, 60)
    # Freeze the broker so the agent dies with a backlog: un-acked messages and unsent spool rows.
    assert mosquitto.proc is not None
    mosquitto.proc.send_signal(signal.SIGSTOP)
    lines += read_until(first, lambda line: line.startswith("sent ") and int(line.split()[1]) >= 200, 60)
    first.send_signal(signal.SIGKILL)
    first.wait()
    mosquitto.proc.send_signal(signal.SIGCONT)
    sent_before = [int(x.split()[1]) for x in lines if x.startswith("sent ")]
    with Spool(spool) as s:
        backlog = s.depth()
    assert backlog >= 50, f"only {backlog} messages were waiting in the spool"
    # The Last Will tells the fleet the agent died.
    assert coll.wait(lambda _: b"offline" in [m.payload for m in coll.on("+/+/availability")], 10)
    second = start_child("outbox", mosquitto.url, str(spool), "dev", str(total), "500")
    lines = read_until(second, lambda line: line.startswith("flushed "), 60)
    second.wait(30)
    assert "flushed True" in lines[-1], lines[-1]
    sent_after = [int(x.split()[1]) for x in lines if x.startswith("sent ")]
    assert sent_after[0] > max(sent_before), "seq must keep increasing after a SIGKILL"
    assert coll.wait(lambda _: set(range(1, total + 1)) <= set(coll.seqs()), 15)
    msgs = assert_complete(coll, total)
    counts = Counter(m["seq"] for m in msgs)
    assert all(c <= 3 for c in counts.values()), counts.most_common(3)
    # What the killed process had not had acknowledged came out of the spool after the restart.
    historical = {m["seq"] for m in msgs if m.get("historical")}
    assert len(historical) >= backlog - 25
    with Spool(spool) as s:
        assert s.depth() == 0


def test_respects_broker_receive_maximum_and_packet_size(tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path / "b", extra_conf="max_inflight_messages 5\nmax_packet_size 3000\n")
    broker.workdir.mkdir()
    with broker, Spool(tmp_path / "s.db") as spool:
        coll = Capture(broker, "edge/#")
        client = MqttClient(broker.url, "dev")
        box = Outbox(client, spool, max_inflight=100)
        box.start()
        client.start()
        try:
            assert client.wait_connected(10)
            assert (client.receive_maximum, client.maximum_packet_size) == (5, 3000)
            for i in range(100):
                box.send(TOPIC, prediction(i), seq="predictions")
            # Too big for this broker: replaying it would get us disconnected forever. Dropped, counted.
            box.send("edge/dev/errors", {"blob": "x" * 5000})
            box.send(TOPIC, prediction(100), seq="predictions")
            assert box.flush(20), box.stats()
            stats = box.stats()
            assert stats["inflight_peak"] <= 5
            assert stats["rejected"] == 1
            assert client.generation == 1, "the broker must never have had to disconnect us"
            assert coll.wait(lambda _: len(coll.seqs()) >= 101, 10)
            assert_complete(coll, 101)
        finally:
            coll.close()
            box.stop()
            client.stop()


def test_full_spool_drops_oldest_and_stats_count_it(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    client = MqttClient("mqtt://127.0.0.1:1", "dev")  # never started: the broker is "down"
    with Spool(path, max_bytes=3000) as spool:
        box = Outbox(client, spool)
        for i in range(40):
            box.send(TOPIC, prediction(i), seq="predictions")
        stats = box.stats()
        assert stats["dropped_spool"] == stats["dropped_spool_since_start"] == 40 - spool.depth() > 0
        kept = [json.loads(m.payload)["seq"] for m in spool.pending()]
        assert kept == list(range(41 - len(kept), 41)), "the newest are kept"
    with Spool(path, max_bytes=3000) as spool:
        again = Outbox(client, spool).stats()
        assert again["dropped_spool"] == stats["dropped_spool"] and again["dropped_spool_since_start"] == 0
