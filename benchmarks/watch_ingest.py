"""How many agent messages per second edge-watch can check and fold into its fleet model, in one run.

Each round feeds the same stream (90 % predictions, 9 % metrics, 1 % status, 20 devices) through:
``json.loads`` alone (the floor), ``edge.watch.state.parse`` with the built-in validator (a device
without jsonschema), ``parse`` with jsonschema, and ``Fleet.ingest`` (jsonschema + the model update,
what the table/web/--json path pays, with either validator). Rounds are interleaved so machine noise hits every path alike;
the figures are medians and ratios to ``json.loads``.

Target: ``Fleet.ingest`` with the default validator at least 1,000 messages/s here, five times a
20-board fleet each at 10 inferences/s; a Raspberry Pi is 5-10x slower, which is what
``edge-watch --validator builtin`` (the faster path) is for.

    python benchmarks/watch_ingest.py [--messages 20000] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.contract import schemas  # noqa: E402
from edge.watch import state  # noqa: E402
from tests.support import samples  # noqa: E402

TARGET_MSGS_PER_S = 1000


def stream(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        dev = f"pi-{i % 20}"
        if i % 100 == 0:
            kind, payload = "status", samples.status(dev)
        elif i % 11 == 0:
            kind, payload = "metrics", samples.metrics(dev)
        else:
            kind, payload = "predictions", samples.prediction(dev, seq=i, total=3.0 + i % 7)
        out.append((schemas.topic_for(kind, dev), json.dumps(payload).encode()))
    return out


def timed(fn: Callable[[], None], n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, help="write the results here")
    a = p.parse_args()
    msgs = stream(a.messages)

    def loads() -> None:
        for _, raw in msgs:
            json.loads(raw)

    def builtin() -> None:
        for topic, raw in msgs:
            _, kind = schemas.split_topic(topic)  # type: ignore[misc]
            schemas.problems(kind, json.loads(raw), builtin=True)

    def with_jsonschema() -> None:
        for topic, raw in msgs:
            state.parse(topic, raw)

    def fleet(validator: str) -> Callable[[], None]:
        def run() -> None:
            f = state.Fleet(validator=validator)
            for i, (topic, raw) in enumerate(msgs):
                f.ingest(topic, raw)
                if i % 500 == 0:
                    f.snapshot()  # the table/web read it meanwhile

        return run

    paths = {
        "json_loads": loads,
        "builtin_validator": builtin,
        "jsonschema_validator": with_jsonschema,
        "fleet_ingest": fleet("auto"),
        "fleet_ingest_builtin": fleet("builtin"),
    }
    results: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(a.rounds):
        for name, fn in paths.items():
            results[name].append(round(timed(fn, len(msgs)), 1))
    med = {k: statistics.median(v) for k, v in results.items()}
    out = {
        "benchmark": "watch_ingest",
        "description": "edge-watch: messages/s parsed, schema-checked and folded into the fleet model "
        "(90% predictions, 9% metrics, 1% status, 20 devices), in-process, no broker",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "messages_per_round": len(msgs),
        "rounds": a.rounds,
        "msgs_per_s": med,
        "rounds_msgs_per_s": results,
        "ratio_to_json_loads": {k: round(v / med["json_loads"], 4) for k, v in med.items()},
        "builtin_vs_jsonschema": round(med["builtin_validator"] / med["jsonschema_validator"], 3),
        "target_msgs_per_s": TARGET_MSGS_PER_S,
        "meets_target": med["fleet_ingest"] >= TARGET_MSGS_PER_S,
        "environment": {
            "machine": platform.machine(),
            "python": platform.python_version(),
            "validator_default": schemas.backend(),
        },
    }
    for k, v in med.items():
        print(f"{k:<22} {v:>10.0f} msgs/s   x{out['ratio_to_json_loads'][k]:.3f} of json.loads")
    print(
        f"built-in validator is x{out['builtin_vs_jsonschema']} the speed of jsonschema; "
        f"target {TARGET_MSGS_PER_S} msgs/s through Fleet.ingest: {'met' if out['meets_target'] else 'MISSED'}"
    )
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
