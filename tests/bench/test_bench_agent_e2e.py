"""The agent's `bench` command end to end: a real agent process, a real mosquitto, a paho capture."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.support.agent import agent_command
from tests.support.broker import Mosquitto
from tests.support.process import run_module


def test_bench_command_on_a_running_agent(
    mosquitto: Mosquitto, tmp_path: Path, mobilenet: Path, capture: Any, agents: Any
) -> None:
    (tmp_path / "in").mkdir()
    sub = capture("edge/b1/status", "edge/b1/bench", "edge/b1/cmd/result")
    args = ("--model", mobilenet, "--source", tmp_path / "in", "--metrics-interval", "0")
    agent = agents(agent_command(mosquitto, "b1", tmp_path / "state", *args), tmp_path / "agent.log")
    try:
        sub.wait_for("edge/b1/status", 1, 60)
        bench_cmd = {
            "action": "bench",
            "runs": 30,
            "warmup": 2,
            "min_secs": 0,
            "warmup_min_secs": 0,
            "max_secs": 5,
        }
        sub.publish("edge/b1/cmd", json.dumps({"id": "bench-1", **bench_cmd}))
        sub.publish("edge/b1/cmd", json.dumps({"id": "bench-bad", "action": "bench", "runs": 0}))
        sub.publish("edge/b1/cmd", json.dumps({"id": "ping-1", "action": "ping"}))

        def result(cid: str) -> Any:
            found = sub.wait(
                lambda s: [r for r in s.json("edge/b1/cmd/result") if r.get("id") == cid],
                60,
                f"cmd/result {cid}",
            )
            return found[0]

        ok = result("bench-1")
        bench = json.loads(sub.wait_for("edge/b1/bench", 1, 30)[0].payload)
        bad = result("bench-bad")
        ping = result("ping-1")
    finally:
        rc = agent.terminate()
    assert rc == 0, agent.output()[-3000:]

    assert ok["ok"] is True, ok
    report = ok["result"]
    sha = hashlib.sha256(mobilenet.read_bytes()).hexdigest()
    assert report["model"]["sha256"] == sha and report["source"] == "agent"
    assert report["runs"] == 30 and report["warmup_runs"] == 2 and report["options"]["max_secs"] == 5
    assert report["device"] == "b1" and set(report["latency_ms"]) == {
        "min",
        "mean",
        "std",
        "p50",
        "p90",
        "p99",
        "max",
    }
    # The bench topic carries the same report, flat, as edge-bench --publish sends it.
    assert bench["schema"] == 1 and bench["device"] == "b1" and bench["ts"].endswith("Z")
    assert bench["latency_ms"] == report["latency_ms"] and bench["model"] == report["model"]

    assert bad["ok"] is False and "runs: Input should be greater than or equal to 1" in bad["error"]
    assert ping["ok"] is True  # the agent carried on after both


def test_cli_help_runs() -> None:
    proc = run_module("edge.bench", "--help")
    assert proc.returncode == 0 and "--reference" in proc.stdout and "exit codes" in proc.stdout
