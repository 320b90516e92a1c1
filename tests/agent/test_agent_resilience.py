"""Losing nothing: broker and agent SIGKILLed mid-stream; Last Will; commands and metrics on a live agent."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

from tests.support.agent import agent_command
from tests.support.broker import Mosquitto


def _feed(d: Path, data: bytes, n: int, every_s: float, written: list[str]) -> None:
    for i in range(n):
        tmp = d / f"img_{i:03d}.bmp.part"
        tmp.write_bytes(data)
        tmp.rename(d / f"img_{i:03d}.bmp")  # atomic appearance, as a camera daemon would do
        written.append(tmp.name[:-5])
        time.sleep(every_s)


def test_broker_and_agent_killed_mid_stream_lose_nothing(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, capture, agents
) -> None:
    d, state = tmp_path / "in", tmp_path / "state"
    d.mkdir()
    sub = capture("edge/k1/predictions", "edge/k1/availability")
    args = agent_command(
        mosquitto,
        "k1",
        state,
        "--model",
        str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
        "--source",
        str(d),
        "--metrics-interval",
        "0",
    )
    agent = agents(args, tmp_path / "agent1.log")
    sub.wait(lambda s: "online" in s.text("edge/k1/availability"), 30, "online")
    written: list[str] = []
    n = 80
    feeder = threading.Thread(target=_feed, args=(d, (coral / "cat.bmp").read_bytes(), n, 0.06, written))
    feeder.start()

    sub.wait(lambda s: len(s.on("edge/k1/predictions")) >= 10, 30, "10 predictions")
    # The broker freezes, then vanishes mid-stream; the agent keeps spooling. Frozen first because a
    # broker SIGKILLed while running can lose what it already acknowledged (its queue to the capture
    # dies with it, unsaved): no client can recover that, and it is not what this test is about.
    assert mosquitto.proc is not None
    mosquitto.proc.send_signal(signal.SIGSTOP)
    time.sleep(1.0)  # the agent's publishes now go unacknowledged and must come back from its spool
    mosquitto.kill()
    mosquitto.start()
    restarted = len(sub.messages)
    sub.wait(lambda s: b"online" in [m.payload for m in s.messages[restarted:]], 30, "the agent back online")
    sub.wait(lambda s: len(written) >= 55, 30, "55 files written")
    before = len(sub.messages)
    agent.kill()  # SIGKILL: no goodbye; the broker must publish the Last Will
    sub.wait(lambda s: any(m.payload == b"offline" for m in s.messages[before:]), 15, "offline (Last Will)")
    agent = agents(args, tmp_path / "agent2.log")
    feeder.join(30)

    def complete(s) -> bool:
        preds = s.json("edge/k1/predictions")
        seqs = {p["seq"] for p in preds}
        return {p["source"] for p in preds} >= set(written) and seqs == set(range(1, max(seqs) + 1))

    try:
        sub.wait(complete, 60, "every file and a gap-free seq")
    except AssertionError:
        raise AssertionError(
            (tmp_path / "agent1.log").read_text()[-3000:]
            + "\n---\n"
            + (tmp_path / "agent2.log").read_text()[-3000:]
        ) from None
    assert agent.terminate() == 0
    preds = sub.json("edge/k1/predictions")
    by_seq: dict[int, list[dict]] = defaultdict(list)
    for p in preds:
        by_seq[p["seq"]].append(p)
    for seq, copies in by_seq.items():
        if len(copies) > 1:  # a duplicate is a replay from the spool, and says so
            assert any(c.get("historical") for c in copies), (seq, copies)
            assert len({c["source"] for c in copies}) == 1
    assert any(p.get("historical") for p in preds), "the outage should have produced historical replays"
    assert sub.text("edge/k1/availability")[-1] == "offline"  # SIGTERM: a clean goodbye


def test_commands_and_metrics_on_a_live_agent(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, capture, agents
) -> None:
    d = tmp_path / "in"
    d.mkdir()
    model = tmp_path / "model.tflite"
    shutil.copy(coral / "mobilenet_v1_0.25_128_quant.tflite", model)
    sub = capture("edge/c1/#")
    agent = agents(
        agent_command(
            mosquitto,
            "c1",
            tmp_path / "state",
            "--model",
            str(model),
            "--source",
            str(d),
            "--labels",
            str(coral / "imagenet_labels.txt"),
            "--metrics-interval",
            "0.5",
        ),
        tmp_path / "agent.log",
    )
    sub.wait(lambda s: s.on("edge/c1/status"), 30, "status")

    commands = [
        b'{"id": "p1", "action": "ping"}',
        b"\x00\x01 not json",
        b'"just a string"',
        b'{"id": "u1", "action": "format_disk"}',
        b'{"id": "s0", "action": "set", "top_k": "three"}',
        b'{"id": "s1", "action": "set", "top_k": 1}',
        b'{"id": "b1", "action": "bench", "runs": 5, "min_secs": 0.05, "max_secs": 1}',
        b'{"id": "b2", "action": "bench", "runs": 0}',
    ]
    for c in commands:
        sub.publish("edge/c1/cmd", c)
    results = sub.wait(
        lambda s: len(s.json("edge/c1/cmd/result")) >= len(commands) and s.json("edge/c1/cmd/result"),
        30,
        "all command results",
    )
    by_id = {r["id"]: r for r in results if r["id"] is not None}
    assert by_id["p1"]["ok"] and by_id["p1"]["result"]["pong"] is True
    assert sum(1 for r in results if r["id"] is None and not r["ok"]) == 2
    assert not by_id["u1"]["ok"] and "unknown action 'format_disk'" in by_id["u1"]["error"]
    assert not by_id["s0"]["ok"] and "top_k = " in by_id["s0"]["error"]
    assert by_id["s1"]["ok"] and by_id["s1"]["result"]["top_k"] == 1
    assert by_id["b1"]["ok"], by_id["b1"]  # edge.bench on the agent's own interpreter
    (report,) = sub.wait(lambda s: s.json("edge/c1/bench"), 30, "bench report")
    assert report["device"] == "c1" and report["schema"] == 1
    assert not by_id["b2"]["ok"] and "runs" in by_id["b2"]["error"]
    assert all(r["schema"] == 1 and r["device"] == "c1" for r in results)

    shutil.copy(coral / "cat.bmp", d / "cat1.bmp")
    sub.wait(lambda s: s.on("edge/c1/predictions"), 30, "prediction")
    assert len(sub.json("edge/c1/predictions")[0]["top_k"]) == 1  # the set command took effect

    model.write_bytes(b"")  # a broken model on disk: reload refuses it, the old one keeps running
    sub.publish("edge/c1/cmd", b'{"id": "r1", "action": "reload"}')
    r1 = sub.wait(
        lambda s: [r for r in s.json("edge/c1/cmd/result") if r["id"] == "r1"], 30, "reload result"
    )[0]
    assert not r1["ok"] and "0 bytes" in r1["error"] and "previous model keeps running" in r1["error"]
    shutil.copy(coral / "cat.bmp", d / "cat2.bmp")
    sub.wait(lambda s: len(s.on("edge/c1/predictions")) >= 2, 30, "prediction after the failed reload")

    shutil.copy(coral / "mobilenet_v1_0.25_128_quant.tflite", model)
    sub.publish("edge/c1/cmd", b'{"id": "r2", "action": "reload"}')
    r2 = sub.wait(
        lambda s: [r for r in s.json("edge/c1/cmd/result") if r["id"] == "r2"], 30, "reload result"
    )[0]
    assert r2["ok"] and len(sub.json("edge/c1/status")) >= 2  # status republished after the reload

    metrics = sub.wait(
        lambda s: [m for m in s.json("edge/c1/metrics") if m["inferences"] >= 2], 30, "metrics"
    )[-1]
    for key in (
        "window_s",
        "inferences_per_s",
        "latency_ms",
        "rss_mb",
        "cpu_temp_c",
        "spool_depth",
        "dropped",
        "errors",
    ):
        assert key in metrics, key
    assert metrics["latency_ms"]["p50"] > 0 and metrics["rss_mb"] > 10 and metrics["spool_depth"] >= 0
    assert agent.alive()
    agent.proc.send_signal(signal.SIGINT)
    assert agent.wait(30) == 0
    assert sub.text("edge/c1/availability")[-1] == "offline"
    assert "Traceback" not in agent.output()


def test_status_and_metrics_payloads_are_json(tmp_path: Path) -> None:
    # guards the docs/mqtt.md keys the dashboards rely on (kept beside the live test above)
    from edge.contract import messages

    m = messages.metrics(
        "d",
        window_s=1.0,
        inferences=0,
        inferences_per_s=0.0,
        latency_ms={"p50": None, "p90": None, "p99": None},
        rss_mb=1.0,
        cpu_temp_c=None,
        spool_depth=0,
        dropped=0,
        errors=0,
    )
    assert json.loads(json.dumps(m))["latency_ms"]["p99"] is None


def test_full_spool_drops_oldest_and_counts_it(tmp_path: Path, coral: Path, agents) -> None:
    from tests.support.broker import free_port
    from tests.support.mqtt import Capture
    from tests.support.process import subprocess_env

    broker = Mosquitto(workdir=tmp_path)
    broker.port = free_port()  # nothing listening yet: the agent spools everything
    d = tmp_path / "in"
    d.mkdir()
    for i in range(20):
        shutil.copy(coral / "cat.bmp", d / f"img_{i:02d}.bmp")
    env = subprocess_env(EDGE_SPOOL_MAX_BYTES="4096")  # room for a handful of predictions
    args = agent_command(
        broker,
        "f1",
        tmp_path / "state",
        "--model",
        str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
        "--source",
        str(d),
        "--metrics-interval",
        "0.3",
        "--log-level",
        "DEBUG",
    )
    agent = agents(args, tmp_path / "agent.log", env=env)
    deadline = time.monotonic() + 30
    while "-> seq 20 " not in agent.output():
        assert time.monotonic() < deadline and agent.alive(), agent.output()[-3000:]
        time.sleep(0.1)
    broker.start()
    try:
        sub = Capture(broker, "edge/f1/predictions", "edge/f1/metrics")
        m = sub.wait(lambda s: [m for m in s.json("edge/f1/metrics") if m["dropped"] > 0], 30, "metrics")[-1]
        preds = sub.wait(lambda s: s.json("edge/f1/predictions"), 30, "predictions")
        time.sleep(0.5)
        seqs = sorted(p["seq"] for p in sub.json("edge/f1/predictions"))
        assert seqs[-1] == 20 and len(seqs) < 20, seqs  # the newest survive, the oldest were dropped
        assert m["dropped"] == 20 - len(seqs), (m, seqs)
        assert seqs == list(range(seqs[0], 21)) and all(p["historical"] for p in preds)
        sub.close()
        assert agent.terminate() == 0
    finally:
        broker.stop()
