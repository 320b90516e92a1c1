"""Tiny stderr progress bars (stdout is reserved for the table or the --json report)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class Bar:
    def __init__(self, label: str, total: int, enabled: bool = True, width: int = 24) -> None:
        self.label, self.total, self.enabled, self.width = label, max(total, 1), enabled, width
        self.started = time.perf_counter()
        self._last = 0.0
        # Redrawing with \r only makes sense on a terminal; logs get the final line only.
        self.live = sys.stderr.isatty()

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and (not self.live or (not force and now - self._last < 0.2)):
            return
        self._last = now
        filled = int(self.width * min(done, self.total) / self.total)
        elapsed = now - self.started
        line = (
            f"{self.label:<14} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
            f"{elapsed:5.1f}s {rate_eta(done, self.total, elapsed)} {extra}"
        )
        sys.stderr.write(f"\r{line}\x1b[K" if self.live else line)
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def rate_eta(done: int, total: int, elapsed: float) -> str:
    """``12.3/s ETA 4s`` while running, ``12.3/s`` at the end ("" before the first item)."""
    if done <= 0 or elapsed <= 0:
        return ""
    rate = done / elapsed
    if done >= total:
        return f"{rate:.1f}/s"
    return f"{rate:.1f}/s ETA {(total - done) / rate:.0f}s"


def iterate(items: Iterable[T], label: str, total: int, enabled: bool) -> Iterator[T]:
    bar = Bar(label, total, enabled)
    for i, item in enumerate(items, 1):
        yield item
        bar.update(i)


def keras_callback(label: str, epochs: int, steps: int, enabled: bool) -> Any:
    from converter import _tf

    keras = _tf.keras()

    class _Progress(keras.callbacks.Callback):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.bar = Bar(label, epochs * steps, enabled)
            self.epoch = 0
            self.logs: dict[str, float] = {}

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            acc = (logs or {}).get("accuracy")
            self.bar.update(
                self.epoch * steps + batch + 1,
                f"epoch {self.epoch + 1}/{epochs}" + (f" acc {acc:.3f}" if acc is not None else ""),
            )

    return _Progress()
