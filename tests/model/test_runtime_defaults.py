"""Interpreter thread default and the tflite-runtime int8 warning, with the real runtimes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from edge.model.runtime import INT8_SLOWDOWN_NOTE, default_threads, load_model
from tests.support.agent import run_agent
from tests.support.process import run_python

PROBE = """
import json, os, sys
from edge.model.runtime import default_threads, load_model
m = load_model(sys.argv[1], runtime=sys.argv[2])
print(json.dumps({"runtime": m.runtime.name, "notes": m.notes, "default_threads": default_threads()}))
"""


def _probe(python: str, model: Path, runtime: str, cpus: set[int] | None = None) -> dict:
    code = PROBE if cpus is None else f"import os; os.sched_setaffinity(0, {sorted(cpus)!r})\n" + PROBE
    out = run_python("-c", code, model, runtime, python=python, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_threads_follow_the_usable_cores(coral: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    assert default_threads() == cores
    one_cpu = _probe(
        sys.executable, coral / "mobilenet_v1_0.25_128_quant.tflite", "auto", {min(os.sched_getaffinity(0))}
    )
    assert one_cpu["default_threads"] == 1  # the cores this process may use, not the machine's


def test_tflite_runtime_with_an_int8_model_on_x86_warns_what_to_install(
    coral: Path, tflite_python: str
) -> None:
    model = coral / "mobilenet_v1_0.25_128_quant.tflite"
    slow = _probe(tflite_python, model, "tflite_runtime")
    assert slow["runtime"] == "tflite_runtime"
    assert INT8_SLOWDOWN_NOTE in slow["notes"] and "install ai-edge-litert" in INT8_SLOWDOWN_NOTE
    fast = load_model(model, runtime="ai_edge_litert")
    assert INT8_SLOWDOWN_NOTE not in fast.notes


def test_agent_logs_the_int8_warning_at_start(coral: Path, tmp_path: Path, tflite_python: str) -> None:
    out = run_agent(
        "mqtt://127.0.0.1:1",
        "w1",
        tmp_path / "state",
        "--model",
        coral / "mobilenet_v1_0.25_128_quant.tflite",
        "--runtime",
        "tflite_runtime",
        "--source",
        coral / "cat.bmp",
        "--once",
        "--flush-timeout",
        "0.5",
        python=tflite_python,
    )
    assert "WARNING" in out.stderr and "install ai-edge-litert" in out.stderr, out.stderr
