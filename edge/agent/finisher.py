"""The last stage of the agent's pipeline: after-invoke work on its own thread, in input order.

The interpreter thread only feeds inputs and copies outputs out; postprocessing,
the JSON message, the spool transaction and the source's "done" record (all of
which need the GIL, and two of which write SQLite) run here, while the next
invoke runs with the GIL released. Measured on the benchmark model, that work
took ~0.35 ms of every ~7 ms inference when it ran between invokes
(docs/agent.md, Performance).

One thread and a FIFO queue keep the order of inputs: error reports and
predictions leave in the order the inputs came, and a source never records an
input as done before the ones ahead of it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("edge.agent")

Job = TypeVar("Job")

_CLOSE = object()


class Finisher(Generic[Job]):
    """Calls ``fn(job)`` for each job put, on one thread, in order; exceptions are logged, never raised."""

    def __init__(self, fn: Callable[[Job], object], *, maxsize: int = 8, name: str = "edge-finish") -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._fn = fn
        # Bounded: if the disk stalls, the interpreter waits instead of piling up outputs in memory.
        self._q: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    def put(self, job: Job) -> None:
        if self._closed:
            raise RuntimeError("the finisher is closed")
        while True:
            try:
                # A timeout, so that a main thread waiting here still runs its SIGTERM handler.
                self._q.put(job, timeout=0.5)
                return
            except queue.Full:
                if not self._thread.is_alive():  # pragma: no cover - _run never lets an exception out
                    raise RuntimeError("the finisher thread died") from None

    def close(self, timeout: float | None = None) -> bool:
        """Finish every job put so far, then stop; True if the thread ended within ``timeout``."""
        if not self._closed:
            self._closed = True
            self._q.put(_CLOSE)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is _CLOSE:
                return
            try:
                self._fn(job)  # type: ignore[arg-type]
            except Exception:  # one input's bad luck must not stop the ones behind it
                log.exception("finishing an input failed")
