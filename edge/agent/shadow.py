"""Shadow mode: a candidate model runs beside the active one on the same live inputs, never in its way.

A signed ``model/set`` with ``stage: "shadow"`` (edge.ota.handler) loads the candidate into the model
slot (:meth:`edge.agent.slot.ModelSlot.load_candidate`) and :meth:`ShadowRunner.start` begins comparing.
After the active model has run an input, the main thread *offers* it (:meth:`ShadowRunner.offer`): the
same preprocessed tensor (or, when the candidate's input differs, the image, prepared again for it), the
active pipeline and its outputs. The offer is sampled (``shadow_fraction``) and put in a one-slot queue
without waiting: when the candidate is still busy with an earlier input the offer is dropped and counted
as ``skipped``. So the active path pays a random draw and a non-blocking put, nothing more.

The ``edge-shadow`` thread lowers its own CPU priority (nice 19, Linux per-thread) and runs the
candidate with one interpreter thread: on a board with a spare core it uses that core; when the active
model needs every core the kernel gives them to the active model first. Every ``shadow_window_s`` it
publishes a window on ``edge/<device>/shadow`` (docs/mqtt.md): inputs compared, skips, candidate errors,
mean agreement (edge.agent.agreement) and the invoke-time percentiles of both models.

Nothing here is persisted: after a restart no candidate shadows (the rollout sends it again).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.agent.agreement import agreement, metric_for
from edge.contract import messages
from edge.inference.pipeline import Invoked, Pipeline, Prepared
from edge.inference.preprocess import dequantize

if TYPE_CHECKING:
    from edge.agent.slot import ModelSlot
    from edge.agent.sources import Item
    from edge.ota.install import InstalledModel
    from edge.ota.manifest import Manifest

log = logging.getLogger("edge.agent.shadow")

NICE = 19  # the shadow thread's CPU priority: the lowest, so the active model always comes first


@dataclass(frozen=True)
class _Candidate:
    model: InstalledModel
    manifest: Manifest
    since: str
    fraction: float
    window_s: float


@dataclass
class _Window:
    started: float
    inputs: int = 0
    skipped: int = 0
    errors: int = 0
    agreement_sum: float = 0.0
    active_ms: list[float] = field(default_factory=list)
    candidate_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    candidate: _Candidate
    data: Any  # the input as the source gave it (prepared again when the candidate's input differs)
    prepared: Prepared
    pipe: Pipeline  # the active pipeline that ran it
    invoked: Invoked


def percentiles(values: list[float]) -> dict[str, float | None]:
    """``{p50, p99}`` in ms, rounded; nulls for an empty window."""
    if not values:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3)}


def same_input(a: Pipeline, b: Pipeline) -> bool:
    """True when ``b`` can take the tensor ``a`` prepared (same shape, dtype, quantization, preprocessing)."""
    sa, sb = a.model.inputs[0], b.model.inputs[0]
    return (
        (sa.shape, sa.dtype, sa.scale, sa.zero_point) == (sb.shape, sb.dtype, sb.scale, sb.zero_point)
        and a.norm == b.norm
        and a.resize == b.resize
        and a.layout == b.layout
    )


def lower_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: nice is per thread); best effort elsewhere."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: still correct, only less polite
        log.info("shadow thread keeps its priority (%s)", exc)


class ShadowRunner:
    """Compares a candidate with the active model on live inputs; implements edge.ota.handler.ShadowHooks.

    ``publish(body)`` sends one window message; ``on_change()`` runs when a candidate starts or stops
    (the app re-publishes its status); ``clock`` and ``rng`` are seams for tests.
    """

    def __init__(
        self,
        slot: ModelSlot,
        device: str,
        publish: Callable[[dict[str, Any]], object],
        *,
        on_change: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.slot = slot
        self.device = device
        self.publish = publish
        self.on_change = on_change
        self.clock = clock
        self.rng = rng or random.Random()
        self._current: _Candidate | None = None  # read without a lock by offer(): one attribute read
        self._window = _Window(clock())
        self._lock = threading.Lock()  # the window's counters: offer() (main thread) and the runner
        self._jobs: queue.Queue[_Job] = queue.Queue(maxsize=1)
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.windows_sent = 0

    # --- ShadowHooks (the edge-ota thread) -------------------------------------------------------------
    def start(self, candidate: InstalledModel, manifest: Manifest) -> None:
        self.slot.load_candidate(candidate)  # raises when it does not load or run: nothing changed
        state = _Candidate(
            candidate,
            manifest,
            messages.utc_iso(),
            float(manifest.shadow_fraction),
            float(manifest.shadow_window_s),
        )
        with self._lock:
            self._current = state
            self._window = _Window(self.clock())
        self._drain()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edge-shadow", daemon=True)
            self._thread.start()
        log.info(
            "shadowing %s (version %s) on %.0f%% of inputs, windows of %g s",
            candidate.sha256[:12],
            manifest.version,
            state.fraction * 100,
            state.window_s,
        )
        self._changed()

    def stop(self) -> None:
        with self._lock:
            was, self._current = self._current, None
        self.slot.drop_candidate()
        self._drain()
        if was is not None:
            log.info("shadow candidate %s stopped", was.model.sha256[:12])
            self._changed()

    def candidate(self) -> tuple[InstalledModel, Manifest] | None:
        c = self._current
        return (c.model, c.manifest) if c is not None else None

    # --- the app -----------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The status message's ``shadow`` key."""
        c = self._current
        if c is None:
            return {"shadow": None}
        return {
            "shadow": {
                "candidate_sha256": c.model.sha256,
                "version": c.model.version,
                "since": c.since,
                "fraction": c.fraction,
            }
        }

    def offer(self, item: Item, prepared: Prepared, pipe: Pipeline, invoked: Invoked) -> None:
        """Called by the main thread after each active invoke; never blocks (see the module doc)."""
        c = self._current
        if c is None or (c.fraction < 1.0 and self.rng.random() >= c.fraction):
            return
        try:
            self._jobs.put_nowait(_Job(c, item.data, prepared, pipe, invoked))
        except queue.Full:
            with self._lock:
                self._window.skipped += 1

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # --- the edge-shadow thread ----------------------------------------------------------------------------
    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("shadow change callback failed")

    def _drain(self) -> None:
        try:
            while True:
                self._jobs.get_nowait()
        except queue.Empty:
            pass

    def _run(self) -> None:
        lower_priority()
        while not self._closing.is_set():
            c = self._current
            wait = 0.5 if c is None else min(0.5, max(0.0, self._window.started + c.window_s - self.clock()))
            try:
                job: _Job | None = self._jobs.get(timeout=wait)
            except queue.Empty:
                job = None
            if job is not None and job.candidate is self._current:
                self.compare(job)
            self.maybe_publish()

    def compare(self, job: _Job) -> float | None:
        """Run the candidate on one offered input and count it in the window; the agreement (None: the
        input could not be read again)."""
        slot_candidate = self.slot.candidate
        if slot_candidate is None or slot_candidate[1].sha256 != job.candidate.model.sha256:
            return None
        cand = slot_candidate[0]
        active = job.pipe
        try:
            if same_input(active, cand):
                prepared = Prepared(job.prepared.tensor, 0.0, cand.model, job.prepared.geometry)
            else:
                prepared = cand.prepare(job.data, "shadow")
        except FileNotFoundError:  # a file the source has since moved away: not the candidate's fault
            with self._lock:
                self._window.skipped += 1
            return None
        except Exception as exc:
            return self._count(job, None, exc)
        try:
            invoked = cand.invoke(prepared)
            mine, theirs = active.finish(job.invoked), cand.finish(invoked)
            score = agreement(
                active.kind,
                mine.fields or {mine.result_key: mine.result},
                theirs.fields or {theirs.result_key: theirs.result},
                [dequantize(o, s) for o, s in zip(job.invoked.outputs, active.model.outputs)],
                [dequantize(o, s) for o, s in zip(invoked.outputs, cand.model.outputs)],
            )
        except Exception as exc:  # the candidate failing on an input is what the window reports
            return self._count(job, None, exc)
        return self._count(job, invoked.inference_ms, None, score)

    def _count(
        self, job: _Job, candidate_ms: float | None, error: Exception | None, score: float = 0.0
    ) -> float:
        with self._lock:
            w = self._window
            w.inputs += 1
            w.agreement_sum += score
            w.active_ms.append(job.invoked.inference_ms)
            if candidate_ms is not None:
                w.candidate_ms.append(candidate_ms)
            if error is not None:
                w.errors += 1
        if error is not None:
            log.debug("shadow candidate failed on an input: %s: %s", type(error).__name__, error)
        return score

    def maybe_publish(self, force: bool = False) -> dict[str, Any] | None:
        """Publish the window when it is over (or ``force``); returns the message sent."""
        c = self._current
        now = self.clock()
        if c is None or (not force and now - self._window.started < c.window_s):
            return None
        with self._lock:
            w, self._window = self._window, _Window(now)
        body = messages.shadow_window(
            self.device,
            candidate_sha256=c.model.sha256,
            active_sha256=self.slot.pipeline.model.sha256,
            task=self.slot.pipeline.kind,
            inputs=w.inputs,
            skipped=w.skipped,
            agreement=w.agreement_sum / w.inputs if w.inputs else None,
            metric=metric_for(self.slot.pipeline.kind),
            latency_ms={"active": percentiles(w.active_ms), "candidate": percentiles(w.candidate_ms)},
            errors=w.errors,
            window_s=now - w.started,
        )
        try:
            self.publish(body)
            self.windows_sent += 1
        except Exception:
            log.exception("cannot publish the shadow window")
        return body
