"""--publish against a real mosquitto, read back with mosquitto_sub."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.bench.bench_helpers import QUICK, bench_cli
from tests.support.broker import Mosquitto, free_port


def subscribe(broker: Mosquitto, topic: str) -> subprocess.Popen[str]:
    """mosquitto_sub, returned once its subscription is acknowledged (so nothing published is missed)."""
    # stdbuf: mosquitto_sub block-buffers a pipe, and the SUBACK line must arrive now, not at exit.
    sub = subprocess.Popen(
        [
            "stdbuf",
            "-oL",
            "mosquitto_sub",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-t",
            topic,
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "60",
            "-d",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert sub.stdout is not None
    for line in sub.stdout:
        if "SUBACK" in line:
            return sub
    raise AssertionError(f"mosquitto_sub never subscribed (exit {sub.wait()})")


def test_cli_publishes_the_report(mosquitto: Mosquitto, mobilenet: Path) -> None:
    sub = subscribe(mosquitto, "edge/+/bench")
    proc = bench_cli(mobilenet, *QUICK, "--json", "--publish", mosquitto.url, "--device-id", "pi-lab-1")
    assert proc.returncode == 0, proc.stderr
    assert "report published to edge/pi-lab-1/bench" in proc.stderr
    out, _ = sub.communicate(timeout=60)
    payload = next(line for line in out.splitlines() if line.startswith("{"))
    assert "edge/pi-lab-1/bench" in out  # the topic, in mosquitto_sub's debug line
    got = json.loads(payload)
    assert got == json.loads(proc.stdout)  # what was printed is what was sent
    assert got["schema"] == 1 and got["device"] == "pi-lab-1" and got["ts"].endswith("Z")
    assert got["runs"] == 20 and got["latency_ms"]["p50"] > 0


def test_unreachable_broker_is_a_clear_error(mobilenet: Path) -> None:
    proc = bench_cli(mobilenet, *QUICK, "--publish", f"mqtt://127.0.0.1:{free_port()}", "--device-id", "d1")
    assert proc.returncode == 2
    assert "cannot reach the MQTT broker at 127.0.0.1" in proc.stderr and "fix:" in proc.stderr
    bad_id = bench_cli(mobilenet, "--publish", "mqtt://127.0.0.1:1883", "--device-id", "a/b")
    assert bad_id.returncode == 2 and "--device-id must be" in bad_id.stderr
