"""Publish capacity at QoS 1: the agent's Outbox + on-disk Spool vs bare paho, in one run.

Both paths publish the same predictions-like JSON payloads at QoS 1 to a local mosquitto and
are timed from the first publish until the broker has acknowledged every message (PUBACK); a
``mosquitto_sub`` process counts deliveries so a fast-but-lossy path cannot win. The Outbox path
includes what the agent really pays per message: JSON encoding, the persisted ``seq``, the SQLite
insert (WAL, synchronous=NORMAL), marking as attempted and the delete on PUBACK.

Targets: at least 2,000 messages/s through the Outbox, so MQTT is never the agent's bottleneck, and at
least 0.5x bare paho in the same run (the durable path may cost, but not an order of magnitude: before
the network loop woke for publishes from other threads it was 0.05x).

    python benchmarks/publish_capacity.py [--messages 5000] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402

from benchmarks._report import mqtt_environment, write_result  # noqa: E402
from edge.transport import MqttClient  # noqa: E402
from edge.transport.outbox import Outbox  # noqa: E402
from edge.transport.spool import Spool  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402

TARGET_MSGS_PER_S = 2000
TARGET_RATIO = 0.5  # Outbox+Spool vs bare paho, same run
TOPIC = "edge/bench-device/predictions"


def prediction(i: int) -> dict:
    """Shaped like a classifier's prediction in docs/mqtt.md (about 600 bytes of JSON)."""
    return {
        "schema": 1,
        "device": "bench-device",
        "ts": "2026-11-29T14:10:00.123Z",
        "source": f"frame_{i:06d}.jpg",
        "model_sha256": "3f2a" * 16,
        "kind": "classifier",
        "latency_ms": {"preprocess": 1.234, "inference": 9.876, "postprocess": 0.123, "total": 11.233},
        "top_k": [
            {"index": 286 + k, "label": f"Egyptian cat {k}", "score": round(0.9 / (k + 1), 5)}
            for k in range(5)
        ],
    }


class Counter:
    """``mosquitto_sub`` counting deliveries in its own process (C, so it does not steal our GIL)."""

    def __init__(self, broker: Mosquitto, expected: int) -> None:
        self.proc = subprocess.Popen(
            [
                "mosquitto_sub",
                "-h",
                broker.host,
                "-p",
                str(broker.port),
                "-t",
                TOPIC,
                "-q",
                "1",
                "-C",
                str(expected),
                "-W",
                "120",
                "-F",
                "%m",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)  # let it subscribe

    def count(self) -> int:
        out, _ = self.proc.communicate(timeout=150)
        return out.count(b"\n")


def bench_outbox(
    broker: Mosquitto, n: int, workdir: Path, max_inflight: int, send_us: list[float]
) -> tuple[float, int]:
    counter = Counter(broker, n)
    client = MqttClient(broker.url, "bench-outbox", backoff_min=0.2, backoff_max=1.0)
    spool = Spool(workdir / f"spool-{time.monotonic_ns()}.db")
    box = Outbox(client, spool, max_inflight=max_inflight)
    box.start()
    client.start()
    if not client.wait_connected(10):
        raise SystemExit(f"cannot connect to {broker.url}: {client.last_error}")
    clock = time.perf_counter
    started = clock()
    for i in range(n):
        t0 = clock()
        box.send(TOPIC, prediction(i), seq="predictions")
        send_us.append((clock() - t0) * 1e6)
    if not box.flush(120):
        raise SystemExit(f"outbox did not drain: {box.stats()}")
    elapsed = time.perf_counter() - started
    box.stop()
    client.stop()
    spool.close()
    return n / elapsed, counter.count()


def bench_bare_paho(broker: Mosquitto, n: int, max_inflight: int) -> tuple[float, int]:
    counter = Counter(broker, n)
    acked = 0
    done = threading.Event()

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1
        if acked == n:
            done.set()

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=paho.MQTTv5)
    c.max_inflight_messages_set(max_inflight)
    c.max_queued_messages_set(0)
    c.on_publish = on_publish
    c.connect(broker.host, broker.port)
    c.loop_start()
    time.sleep(0.2)
    started = time.perf_counter()
    for i in range(n):
        payload = dict(prediction(i), seq=i + 1)
        c.publish(TOPIC, json.dumps(payload, separators=(",", ":")), qos=1)
    if not done.wait(120):
        raise SystemExit(f"bare paho: only {acked}/{n} acknowledged")
    elapsed = time.perf_counter() - started
    c.loop_stop()
    c.disconnect()
    return n / elapsed, counter.count()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=5000, help="messages per round and path")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported")
    ap.add_argument("--max-inflight", type=int, default=100, help="un-acked messages allowed (both paths)")
    ap.add_argument("--json", type=Path, help="write the results there (e.g. benchmarks/reference/...)")
    args = ap.parse_args(argv)

    outbox_rates: list[float] = []
    send_us: list[float] = []  # how long the agent's thread is held by each send() call
    bare_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp, Mosquitto(workdir=Path(tmp)) as broker:
        for r in range(args.rounds):
            # Alternate the order so neither path always runs on a warmer machine.
            order = ("outbox", "bare") if r % 2 == 0 else ("bare", "outbox")
            for which in order:
                if which == "outbox":
                    rate, got = bench_outbox(broker, args.messages, Path(tmp), args.max_inflight, send_us)
                    outbox_rates.append(rate)
                else:
                    rate, got = bench_bare_paho(broker, args.messages, args.max_inflight)
                    bare_rates.append(rate)
                if got != args.messages:
                    raise SystemExit(f"{which}: subscriber received {got}/{args.messages} messages")
                print(f"round {r + 1} {which:6s}: {rate:8.0f} msg/s ({got} delivered)", flush=True)

    outbox = statistics.median(outbox_rates)
    bare = statistics.median(bare_rates)
    result = {
        "benchmark": "publish_capacity",
        "description": "QoS 1 predictions-like JSON to a local mosquitto, until every PUBACK; "
        "Outbox+Spool (durable, seq, historical marking) vs bare paho publish loop",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "messages_per_round": args.messages,
        "rounds": args.rounds,
        "payload_bytes": len(json.dumps(dict(prediction(0), seq=1), separators=(",", ":"))),
        "max_inflight": args.max_inflight,
        "outbox_msgs_per_s": round(outbox, 1),
        "bare_paho_msgs_per_s": round(bare, 1),
        "outbox_vs_bare_ratio": round(outbox / bare, 3),
        "outbox_rounds": [round(x, 1) for x in outbox_rates],
        "send_call_us": {
            "p50": round(pct(send_us, 50), 1),
            "p90": round(pct(send_us, 90), 1),
            "p99": round(pct(send_us, 99), 1),
        },
        "bare_rounds": [round(x, 1) for x in bare_rates],
        "target_msgs_per_s": TARGET_MSGS_PER_S,
        "target_ratio": TARGET_RATIO,
        "meets_target": outbox >= TARGET_MSGS_PER_S and outbox / bare >= TARGET_RATIO,
        "environment": mqtt_environment(),
    }
    print(
        f"Outbox.send() call: p50 {pct(send_us, 50):.0f} us, p99 {pct(send_us, 99):.0f} us "
        "(spooled durably before it returns)"
    )
    print(
        f"\nOutbox+Spool: {outbox:.0f} msg/s   bare paho: {bare:.0f} msg/s   "
        f"ratio {outbox / bare:.2f}   target >= {TARGET_MSGS_PER_S} msg/s and ratio >= {TARGET_RATIO}: "
        f"{'PASS' if result['meets_target'] else 'FAIL'}"
    )
    write_result(args.json, result)
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
