"""--publish against a real mosquitto, read back with mosquitto_sub."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench.bench_helpers import QUICK, bench_cli
from tests.support.broker import Mosquitto, free_port
from tests.support.mqtt import json_lines, mosquitto_sub


def test_cli_publishes_the_report(mosquitto: Mosquitto, mobilenet: Path) -> None:
    sub = mosquitto_sub(mosquitto, "edge/+/bench", "-C", "1", "-W", "60")
    proc = bench_cli(mobilenet, *QUICK, "--json", "--publish", mosquitto.url, "--device-id", "pi-lab-1")
    assert proc.returncode == 0, proc.stderr
    assert "report published to edge/pi-lab-1/bench" in proc.stderr
    out, _ = sub.communicate(timeout=60)
    (got,) = json_lines(out)
    assert "edge/pi-lab-1/bench" in out  # the topic, in mosquitto_sub's debug line
    assert got == json.loads(proc.stdout)  # what was printed is what was sent
    assert got["schema"] == 1 and got["device"] == "pi-lab-1" and got["ts"].endswith("Z")
    assert got["runs"] == 20 and got["latency_ms"]["p50"] > 0


def test_unreachable_broker_is_a_clear_error(mobilenet: Path) -> None:
    proc = bench_cli(mobilenet, *QUICK, "--publish", f"mqtt://127.0.0.1:{free_port()}", "--device-id", "d1")
    assert proc.returncode == 2
    assert "cannot reach the MQTT broker at 127.0.0.1" in proc.stderr and "fix:" in proc.stderr
    bad_id = bench_cli(mobilenet, "--publish", "mqtt://127.0.0.1:1883", "--device-id", "a/b")
    assert bad_id.returncode == 2 and "--device-id must be" in bad_id.stderr
