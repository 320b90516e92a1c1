"""One model's benchmark, step by step, with the methodology of TFLite's ``benchmark_model``.

A run is: one *first inference* (timed on its own: it pays lazy allocation
and delegate compilation), a *warm-up* (at least ``warmup`` invokes and at
least ``warmup_min_secs`` seconds), then *timed runs* (at least ``runs``
invokes and at least ``min_secs`` seconds, stopping at ``max_secs`` whatever
the count). Each invoke is timed on its own with ``perf_counter_ns`` around
``invoke()`` only: setting inputs and reading outputs are not in the figure.

:class:`ModelBench` exposes the steps separately so the runner can interleave
several models in round-robin blocks; :func:`edge.bench.benchmark` drives one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from msgspec import Meta

from edge.bench import system
from edge.bench.stats import LatencyStats, summarize
from edge.errors import EdgeError
from edge.model.runtime import LoadedModel
from edge.validation import Problem, Record

Feed = Mapping[int, np.ndarray]  # input tensor index -> value


class BenchError(EdgeError):
    """A model failed while being benchmarked."""


class BenchOptions(Record, frozen=True):
    """How long to warm up and measure. Defaults are ``benchmark_model``'s."""

    runs: Annotated[
        int, Meta(ge=1, description="minimum number of timed invokes (fewer only if max_secs is hit)")
    ] = 50
    min_secs: Annotated[
        float, Meta(ge=0, description="keep timing until at least this many seconds have passed")
    ] = 1.0
    max_secs: Annotated[
        float, Meta(gt=0, description="stop timing after this many seconds, even below `runs`")
    ] = 150.0
    warmup: Annotated[
        int, Meta(ge=0, description="minimum number of untimed warm-up invokes after the first inference")
    ] = 1
    warmup_min_secs: Annotated[float, Meta(ge=0, description="warm up for at least this many seconds")] = 0.5
    block: Annotated[int, Meta(ge=1, description="invokes per turn when several models are interleaved")] = 10
    seed: Annotated[int, Meta(ge=0, description="seed of the random inputs")] = 0

    def cross_check(self) -> list[Problem]:
        return min_secs_window(self.min_secs, self.max_secs)


def min_secs_window(min_secs: float, max_secs: float) -> list[Problem]:
    if min_secs > max_secs:
        return [("min_secs", min_secs, f"must not exceed max_secs ({max_secs!r})")]
    return []


@dataclass(frozen=True)
class ModelResult:
    """Everything measured for one model in a run."""

    loaded: LoadedModel
    input: str  # "random (seed N)" or the image file/folder
    first_inference_ms: float
    warmup_runs: int
    warmup_mean_ms: float | None
    samples_ms: tuple[float, ...]
    stats: LatencyStats
    elapsed_s: float  # wall time of the timed phase for this model (inputs included)
    stopped_by: str  # "runs", "min_secs" or "max_secs": what ended the timed phase
    rss_delta_mb: float | None
    postprocess: dict[str, Any] | None = None  # the agent's task decoder on these outputs, timed apart

    @property
    def inferences_per_s(self) -> float:
        return 1000.0 / self.stats.mean if self.stats.mean > 0 else float("inf")


class ModelBench:
    """A loaded model and its inputs, measured one phase at a time."""

    def __init__(
        self, loaded: LoadedModel, feeds: Sequence[Feed], input_label: str, rss_before_mb: float | None = None
    ) -> None:
        if not feeds:
            raise ValueError("at least one input feed is needed")
        self.loaded = loaded
        self.feeds = list(feeds)
        self.input_label = input_label
        self.rss_before_mb = system.rss_mb() if rss_before_mb is None else rss_before_mb
        self.rss_delta_mb: float | None = None
        self.first_inference_ms: float | None = None
        self.warmup_ms: list[float] = []
        self.samples_ns: list[int] = []
        self.elapsed_ns = 0
        self.postprocess: dict[str, Any] | None = None
        self._next = 0
        self._set(0)

    def _set(self, i: int) -> None:
        setter = self.loaded.interpreter.set_tensor
        for index, value in self.feeds[i].items():
            setter(index, value)

    def _invokes(self, n: int) -> list[int]:
        """``n`` invokes, each timed alone; the input changes between them only when there are several."""
        invoke = self.loaded.interpreter.invoke  # looked up per call so a wrapped invoke is honoured
        clock = time.perf_counter_ns
        out: list[int] = []
        cycle = len(self.feeds) > 1
        try:
            for _ in range(n):
                if cycle:
                    self._next = (self._next + 1) % len(self.feeds)
                    self._set(self._next)
                t0 = clock()
                invoke()
                t1 = clock()
                out.append(t1 - t0)
        except Exception as exc:  # the runtime's own errors are terse: say which model and what to try
            raise BenchError(
                f"{self.loaded.path.name} failed while running ({self.loaded.runtime.name} "
                f"{self.loaded.runtime.version}, delegate {self.loaded.delegate}): {type(exc).__name__}: {exc}",
                "check the model runs in the agent (edge-agent run --once), try --delegate cpu or another "
                "--runtime",
            ) from exc
        return out

    def first_inference(self) -> float:
        self.first_inference_ms = self._invokes(1)[0] / 1e6
        after = system.rss_mb()
        if after is not None and self.rss_before_mb is not None:
            self.rss_delta_mb = round(after - self.rss_before_mb, 2)
        return self.first_inference_ms

    def warm_up(self, options: BenchOptions) -> None:
        """Untimed invokes until both the count and the duration are reached (or ``max_secs``)."""
        start = time.perf_counter_ns()
        while True:
            elapsed = (time.perf_counter_ns() - start) / 1e9
            if len(self.warmup_ms) >= options.warmup and elapsed >= options.warmup_min_secs:
                break
            if elapsed >= options.max_secs:
                break
            self.warmup_ms.extend(ns / 1e6 for ns in self._invokes(1))

    def stop_reason(self, options: BenchOptions) -> str | None:
        """Why the timed phase is over, or ``None`` while it must go on."""
        elapsed = self.elapsed_ns / 1e9
        if self.samples_ns and elapsed >= options.max_secs:
            return "max_secs"
        if len(self.samples_ns) >= options.runs and elapsed >= options.min_secs:
            return "runs" if options.min_secs == 0 or len(self.samples_ns) == options.runs else "min_secs"
        return None

    def step(self, options: BenchOptions) -> None:
        """One turn of the timed phase: up to ``block`` invokes, not overshooting ``runs`` needlessly."""
        missing = options.runs - len(self.samples_ns)
        n = min(options.block, missing) if missing > 0 else options.block
        start = time.perf_counter_ns()
        self.samples_ns.extend(self._invokes(n))
        self.elapsed_ns += time.perf_counter_ns() - start

    def measure_postprocess(self, runs: int = 20) -> dict[str, Any]:
        """Time the agent's own postprocess for this model (task chosen as the agent would, default
        settings) on the outputs of the last invoke: NMS and mask work cost real time on a Pi."""
        from edge.inference import postprocess
        from edge.inference.preprocess import image_layout
        from edge.inference.tasks import select
        from edge.inference.tasks.geometry import Geometry

        m = self.loaded
        try:
            layout = image_layout(m.inputs[0]) if len(m.inputs) == 1 else None
            hw = (layout.height, layout.width) if layout else None
            choice = select.choose(m.outputs, custom_ops=m.info.custom_ops, input_hw=hw)
            outs = [m.interpreter.get_tensor(o.index) for o in m.outputs]
            geo = Geometry.plan((hw[1], hw[0]), (hw[1], hw[0])) if hw else None
            settings = postprocess.Settings()
            times = []
            for _ in range(runs):
                t0 = time.perf_counter_ns()
                postprocess.decode(choice, outs, m.outputs, {}, settings, geo)
                times.append((time.perf_counter_ns() - t0) / 1e6)
        except EdgeError as exc:
            self.postprocess = {"task": None, "decoder": None, "error": exc.what}
            return self.postprocess
        stats = summarize(tuple(times))
        self.postprocess = {
            "task": choice.task,
            "decoder": choice.decoder,
            "runs": runs,
            "latency_ms": {k: round(float(stats.as_dict()[k]), 6) for k in ("min", "p50", "mean", "max")},
        }
        return self.postprocess

    def result(self, options: BenchOptions) -> ModelResult:
        if self.first_inference_ms is None or not self.samples_ns:
            raise RuntimeError("benchmark not run yet: call first_inference() and step()")
        samples = tuple(ns / 1e6 for ns in self.samples_ns)
        return ModelResult(
            loaded=self.loaded,
            input=self.input_label,
            first_inference_ms=self.first_inference_ms,
            warmup_runs=len(self.warmup_ms),
            warmup_mean_ms=sum(self.warmup_ms) / len(self.warmup_ms) if self.warmup_ms else None,
            samples_ms=samples,
            stats=summarize(samples),
            elapsed_s=self.elapsed_ns / 1e9,
            stopped_by=self.stop_reason(options) or "runs",
            rss_delta_mb=self.rss_delta_mb,
            postprocess=self.postprocess,
        )


def model_record(r: ModelResult, first: ModelResult | None = None, samples: bool = False) -> dict[str, Any]:
    """The per-model keys of the report (see docs/bench.md)."""
    m = r.loaded
    base = first or r
    rec: dict[str, Any] = {
        "model": {
            "path": str(m.path),
            "requested_path": str(m.requested_path),
            "size_bytes": m.size_bytes,
            "sha256": m.sha256,
        },
        "runtime": {"name": m.runtime.name, "version": m.runtime.version},
        "delegate": m.delegate,
        "threads": m.threads,
        "notes": list(m.notes),
        "input": r.input,
        "init_ms": round(m.init_ms, 4),
        "first_inference_ms": round(r.first_inference_ms, 4),
        "warmup_runs": r.warmup_runs,
        "warmup_mean_ms": None if r.warmup_mean_ms is None else round(r.warmup_mean_ms, 4),
        "runs": r.stats.count,
        "elapsed_s": round(r.elapsed_s, 4),
        "stopped_by": r.stopped_by,
        "latency_ms": {k: round(float(v), 6) for k, v in r.stats.as_dict().items() if k != "count"},
        "inferences_per_s": round(r.inferences_per_s, 3),
        "rss_delta_mb": r.rss_delta_mb,
        "postprocess": r.postprocess,
        # >1 means slower than the first model (for latencies), faster (for inferences_per_s).
        "ratio_vs_first": {
            "p50": round(r.stats.p50 / base.stats.p50, 4) if base.stats.p50 else None,
            "mean": round(r.stats.mean / base.stats.mean, 4) if base.stats.mean else None,
            "inferences_per_s": round(r.inferences_per_s / base.inferences_per_s, 4),
        },
    }
    if samples:
        rec["samples_ms"] = [round(x, 6) for x in r.samples_ms]
    return rec
