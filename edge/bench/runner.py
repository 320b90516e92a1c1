"""Run one or several models in one go, interleaved so that machine drift hits them all alike.

Each model gets its first inference and warm-up, then the timed phase goes
round-robin: a block of invokes for model 1, a block for model 2, ... until
every model has its count and duration. A thermal throttle or a noisy
neighbour half-way through then slows every model, not just the last one,
and the ratios against the first model stay meaningful.
"""

from __future__ import annotations

import platform
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import edge
from edge.bench import system
from edge.bench.core import BenchOptions, Feed, ModelBench, ModelResult, model_record
from edge.bench.inputs import feeds_for
from edge.contract.messages import utc_iso
from edge.model.runtime import LoadedModel
from edge.validation import to_builtins

SCHEMA = 1


@dataclass(frozen=True)
class BenchRun:
    """The outcome of one ``edge-bench`` run: one result per model plus the machine's state around it."""

    results: tuple[ModelResult, ...]
    options: BenchOptions
    before: system.Snapshot
    after: system.Snapshot
    peak_rss_mb: float
    started: str
    finished: str
    root: Path = field(default=system.ROOT)

    def report(self, device: str | None = None, samples: bool = False) -> dict[str, Any]:
        """The JSON report: the first model's keys at the top level, every model under ``models``."""
        first = self.results[0]
        models = [model_record(r, first, samples) for r in self.results]
        head = {
            "schema": SCHEMA,
            "device": device or socket.gethostname(),
            "ts": self.finished,
            "tool": "edge-bench",
            "version": edge.__version__,
            "started_at": self.started,
            "board": system.board(self.root),
            "arch": system.arch(),
            "hostname": socket.gethostname(),
            "python": platform.python_version(),
            "options": to_builtins(self.options),
            "cpu": system.cpu_report(self.before, self.after, self.root),
            "edgetpu": system.edgetpu_report(self.before, self.after),
            "peak_rss_mb": self.peak_rss_mb,
        }
        return {**head, **models[0], "models": models}


def run(
    benches: Sequence[ModelBench],
    options: BenchOptions,
    root: Path = system.ROOT,
    vcgencmd: str | None = None,
) -> BenchRun:
    """Measure prepared models (first inference already done or not), interleaved."""
    if not benches:
        raise ValueError("nothing to benchmark")
    started = utc_iso()
    for b in benches:
        if b.first_inference_ms is None:
            b.first_inference()
    before = system.snapshot(root, vcgencmd)
    for b in benches:
        b.warm_up(options)
    pending = list(benches)
    while pending:
        for b in pending:
            b.step(options)
        pending = [b for b in pending if b.stop_reason(options) is None]
    after = system.snapshot(root, vcgencmd)
    for b in benches:  # after the timed phase: never mixed into the invoke figures
        b.measure_postprocess()
    return BenchRun(
        results=tuple(b.result(options) for b in benches),
        options=options,
        before=before,
        after=after,
        peak_rss_mb=system.peak_rss_mb(),
        started=started,
        finished=utc_iso(),
        root=root,
    )


def benchmark(
    loaded: LoadedModel,
    options: BenchOptions | None = None,
    feeds: Sequence[Feed] | None = None,
    input_label: str | None = None,
) -> BenchRun:
    """Benchmark one already-loaded model (seeded random inputs unless ``feeds`` are given)."""
    options = options or BenchOptions()
    if feeds is None:
        feeds, label = feeds_for(loaded, "random", options.seed)
        input_label = input_label or label
    return run([ModelBench(loaded, feeds, input_label or "given")], options)
