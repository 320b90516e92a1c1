"""The agent's `bench` command end to end: a real agent process, a real mosquitto, mosquitto_pub/sub."""

from __future__ import annotations

import hashlib
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, run_module, subprocess_env
from tests.support.broker import Mosquitto


class Sub:
    """``mosquitto_sub -v`` on several topics, lines collected by a thread as they arrive."""

    def __init__(self, broker: Mosquitto, topics: list[str]) -> None:
        args = ["stdbuf", "-oL", "mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-v"]
        for t in topics:
            args += ["-t", t]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.got: list[tuple[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait(self, pred: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = [(t, p) for t, p in self.got if pred(t, p)]
            if found:
                return found[0][1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {[t for t, _ in self.got]}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            topic, _, payload = line.partition(" ")
            try:
                self.got.append((topic, json.loads(payload)))
            except json.JSONDecodeError:
                self.got.append((topic, payload))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def pub(broker: Mosquitto, topic: str, payload: str) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic, "-m", payload],
        check=True,
        timeout=30,
    )


def test_bench_command_on_a_running_agent(mosquitto: Mosquitto, tmp_path: Path, mobilenet: Path) -> None:
    (tmp_path / "in").mkdir()
    sub = Sub(mosquitto, ["edge/b1/status", "edge/b1/bench", "edge/b1/cmd/result"])
    log = open(tmp_path / "agent.log", "wb")
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge",
            "run",
            "--model",
            str(mobilenet),
            "--source",
            str(tmp_path / "in"),
            "--broker",
            mosquitto.url,
            "--device-id",
            "b1",
            "--state-dir",
            str(tmp_path / "state"),
            "--metrics-interval",
            "0",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=subprocess_env(),
    )
    try:
        sub.wait(lambda t, p: t == "edge/b1/status", 60, "the agent's status")
        pub(
            mosquitto,
            "edge/b1/cmd",
            json.dumps(
                {
                    "id": "bench-1",
                    "action": "bench",
                    "runs": 30,
                    "warmup": 2,
                    "min_secs": 0,
                    "warmup_min_secs": 0,
                    "max_secs": 5,
                }
            ),
        )
        pub(mosquitto, "edge/b1/cmd", json.dumps({"id": "bench-bad", "action": "bench", "runs": 0}))
        pub(mosquitto, "edge/b1/cmd", json.dumps({"id": "ping-1", "action": "ping"}))

        def result(cid: str) -> Any:
            return sub.wait(
                lambda t, p: t == "edge/b1/cmd/result" and isinstance(p, dict) and p.get("id") == cid,
                60,
                f"cmd/result {cid}",
            )

        ok = result("bench-1")
        bench = sub.wait(lambda t, p: t == "edge/b1/bench", 30, "the bench report")
        bad = result("bench-bad")
        ping = result("ping-1")
    finally:
        agent.terminate()
        rc = agent.wait(30)
        sub.close()
        log.close()
    out = (tmp_path / "agent.log").read_text(errors="replace")
    assert rc == 0, out[-3000:]

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
