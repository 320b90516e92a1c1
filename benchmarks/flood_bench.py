"""Agent memory under a flood of large requests: peak RSS vs idle RSS, and the agent still answers.

    python benchmarks/flood_bench.py [--payloads 12] [--mb 50] [--write-reference]

A real agent (mqtt source, the tiny Coral MobileNet) on a real mosquitto. Its idle RSS is read once it
has published its status; then ``--payloads`` requests of ``--mb`` MB each (a JPEG header followed by
zeros: what an attacker or a buggy camera sends) are published on ``infer`` at QoS 1 as fast as the
broker takes them, while this script samples the agent's RSS every 10 ms. Afterwards a ping and a
real image must be answered. Target (issue 12): peak RSS <= 2x idle RSS.

Requests over the agent's MQTT 5 Maximum Packet Size (source.max_request_bytes + 64 KiB, or the model
update limit where signed updates are accepted) are dropped by the broker and never reach the agent
(``errors_published`` 0); smaller ones that are not images are refused by the agent, each with an
``errors`` message. Run both: ``--mb 50`` and ``--mb 15``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from tests.support import DATA  # noqa: E402
from tests.support.agent import agent_command  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402

REFERENCE = ROOT / "benchmarks" / "reference" / "flood_bench.json"
DEV = "flood"


def rss(pid: int, key: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--payloads", type=int, default=12)
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--write-reference", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flood-"))
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.workdir.mkdir()
    broker.start()
    got: dict[str, list[dict[str, Any]]] = {"cmd/result": [], "errors": [], "predictions": [], "status": []}
    cond = threading.Condition()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        leaf = msg.topic.split("/", 2)[2]
        if leaf in got:
            with cond:
                got[leaf].append(json.loads(msg.payload))
                cond.notify_all()

    def wait(pred: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with cond:
            while not pred():
                if not cond.wait(max(0.0, deadline - time.monotonic())) and time.monotonic() > deadline:
                    raise SystemExit(f"timed out waiting for {what}")

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flood-bench")
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"edge/{DEV}/#", 1)
    sub.loop_start()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    agent = subprocess.Popen(
        agent_command(broker, DEV, work / "state", "--model", DATA / "mobilenet_v1_0.25_128_quant.tflite",
                      "--source", "mqtt", "--metrics-interval", "0"),
        stdout=open(work / "agent.log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        wait(lambda: got["status"], 60, "the agent's status")
        time.sleep(1.0)
        idle = rss(agent.pid)
        peak, stop = [idle], threading.Event()

        def sample() -> None:
            while not stop.is_set() and agent.poll() is None:
                peak.append(rss(agent.pid))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        payload = b"\xff\xd8\xff\xe0" + bytes(int(args.mb * 1024 * 1024) - 4)
        started = time.monotonic()
        for i in range(args.payloads):
            sub.publish(f"edge/{DEV}/infer/big{i}", payload, qos=1).wait_for_publish(120)
        flood_s = time.monotonic() - started
        cid = uuid.uuid4().hex[:8]
        sub.publish(f"edge/{DEV}/cmd", json.dumps({"id": cid, "action": "ping"}), qos=1)
        sub.publish(f"edge/{DEV}/infer/cat", (DATA / "cat.bmp").read_bytes(), qos=1)
        wait(
            lambda: any(r.get("id") == cid for r in got["cmd/result"]) and got["predictions"],
            60,
            "ping + cat",
        )
        time.sleep(0.5)
        stop.set()
        sampler.join()
        after = rss(agent.pid)
        hwm = rss(agent.pid, "VmHWM")
    finally:
        agent.terminate()
        agent.wait(30)
        sub.loop_stop()
        broker.stop()
    result = {
        "machine": platform.machine(),
        "payloads": args.payloads,
        "payload_mb": args.mb,
        "idle_rss_mb": round(idle / 2**20, 1),
        "peak_rss_mb": round(max(peak) / 2**20, 1),
        "vmhwm_mb": round(hwm / 2**20, 1),
        "after_rss_mb": round(after / 2**20, 1),
        "peak_over_idle": round(max(peak) / idle, 3),
        "flood_seconds": round(flood_s, 2),
        "errors_published": len(got["errors"]),
        "refusals": sorted({e["error"].split(":")[0] for e in got["errors"]}),
        "target_peak_over_idle": 2.0,
        "command": "python benchmarks/flood_bench.py",
    }
    print(json.dumps(result, indent=2))
    if args.write_reference:
        REFERENCE.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["peak_over_idle"] <= 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
