"""Spool replay rate: messages spooled while the broker was unreachable, then replayed on reconnect.

Phase 1 spools ``--messages`` predictions-like messages through the agent's Outbox while its client is
offline (as an agent that ran through an outage and was restarted). Phase 2 opens the spool again (a
new Outbox, as at the next start: every row counts as a replay, is marked attempted and re-encoded with
``"historical": true``), connects to a local mosquitto and is timed from the CONNACK until the broker
has acknowledged every message and each one is deleted from the spool. ``mosquitto_sub`` counts the
deliveries so a lossy replay cannot win. Bare paho publishing the same payloads at QoS 1 in the same
run gives the ceiling of this machine.

Target: >= 5,000 msg/s replayed.

    python benchmarks/spool_replay.py [--messages 20000] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from benchmarks._report import mqtt_environment, write_result  # noqa: E402
from benchmarks.publish_capacity import TOPIC, Counter, bench_bare_paho, prediction  # noqa: E402
from edge.transport import MqttClient  # noqa: E402
from edge.transport.outbox import Outbox  # noqa: E402
from edge.transport.spool import Spool  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402

TARGET_MSGS_PER_S = 5000


def replay(broker: Mosquitto, n: int, workdir: Path) -> tuple[float, float, int]:
    """Returns (replay msg/s, spooling msg/s while offline, delivered)."""
    path = workdir / f"replay-{time.monotonic_ns()}.db"
    offline = MqttClient(broker.url, "bench-replay")  # never started: the broker is out of reach
    spool = Spool(path)
    box = Outbox(offline, spool)
    started = time.perf_counter()
    for i in range(n):
        box.send(TOPIC, prediction(i), seq="predictions")
    spool_rate = n / (time.perf_counter() - started)
    spool.close()

    counter = Counter(broker, n)
    client = MqttClient(broker.url, "bench-replay", backoff_min=0.2, backoff_max=1.0)
    spool = Spool(path)  # the next start
    assert spool.depth() == n
    box = Outbox(client, spool)
    connected = threading.Event()
    t_connect: list[float] = []
    client.on_connect(lambda: (t_connect.append(time.perf_counter()), connected.set()))
    box.start()
    client.start()
    if not connected.wait(10):
        raise SystemExit(f"cannot connect to {broker.url}: {client.last_error}")
    if not box.flush(120):
        raise SystemExit(f"replay did not drain: {box.stats()}")
    rate = n / (time.perf_counter() - t_connect[0])
    box.stop()
    client.stop()
    spool.close()
    return rate, spool_rate, counter.count()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20000, help="messages spooled, then replayed, per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported")
    ap.add_argument("--json", type=Path, help="write the results there (e.g. benchmarks/reference/...)")
    args = ap.parse_args(argv)
    rates: list[float] = []
    spool_rates: list[float] = []
    bare_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="edge-replay-") as tmp, Mosquitto(workdir=Path(tmp)) as broker:
        for r in range(args.rounds):
            rate, spool_rate, got = replay(broker, args.messages, Path(tmp))
            if got != args.messages:
                raise SystemExit(f"subscriber received {got}/{args.messages} replayed messages")
            bare, got_bare = bench_bare_paho(broker, args.messages, 100)
            if got_bare != args.messages:
                raise SystemExit(f"bare paho: subscriber received {got_bare}/{args.messages}")
            rates.append(rate)
            spool_rates.append(spool_rate)
            bare_rates.append(bare)
            print(
                f"round {r + 1}: replay {rate:8.0f} msg/s   (spooled offline at {spool_rate:.0f} msg/s; "
                f"bare paho {bare:.0f} msg/s)",
                flush=True,
            )
    replay_rate = statistics.median(rates)
    bare_rate = statistics.median(bare_rates)
    ok = replay_rate >= TARGET_MSGS_PER_S
    result = {
        "benchmark": "spool_replay",
        "description": "messages spooled while offline, replayed after the next start until every PUBACK "
        "(historical marking, attempts, deletes) vs bare paho QoS 1 in the same run",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "messages_per_round": args.messages,
        "rounds": args.rounds,
        "replay_msgs_per_s": round(replay_rate, 1),
        "replay_rounds": [round(x, 1) for x in rates],
        "spool_offline_msgs_per_s": round(statistics.median(spool_rates), 1),
        "bare_paho_msgs_per_s": round(bare_rate, 1),
        "replay_vs_bare_ratio": round(replay_rate / bare_rate, 3),
        "target_msgs_per_s": TARGET_MSGS_PER_S,
        "meets_target": ok,
        "environment": mqtt_environment(),
    }
    print(
        f"\nreplay {replay_rate:.0f} msg/s (bare paho {bare_rate:.0f}, ratio {replay_rate / bare_rate:.2f}); "
        f"target >= {TARGET_MSGS_PER_S} msg/s: {'PASS' if ok else 'FAIL'}"
    )
    write_result(args.json, result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
