"""edge-bench: on-device benchmarks of ``.tflite`` models with ``benchmark_model``'s methodology.

Library use::

    from edge.model.runtime import load_model
    from edge.bench import BenchOptions, benchmark

    run = benchmark(load_model("model.tflite"), BenchOptions(runs=100))
    report = run.report()           # the JSON report (docs/bench.md)

The agent's ``bench`` command calls :func:`run_for_agent`.
"""

from __future__ import annotations

from edge.bench.agent import AgentBenchParams, BenchParamsError, run_for_agent
from edge.bench.core import BenchError, BenchOptions, ModelBench, ModelResult
from edge.bench.runner import BenchRun, benchmark, run

__all__ = [
    "AgentBenchParams",
    "BenchError",
    "BenchOptions",
    "BenchParamsError",
    "BenchRun",
    "ModelBench",
    "ModelResult",
    "benchmark",
    "run",
    "run_for_agent",
]
