"""Read and preprocess inputs ahead of the interpreter, on a small pool of decode threads.

A JPEG photo can take longer to decode than a small model takes to run: libjpeg's entropy decoding
reads every byte of the file whatever the DCT scale: ~10 ms for a 12 Mpx photo on a 2-core x86 box
against ~3 ms for an int8 MobileNetV2 (benchmarks/agent_bench.py, int8-jpeg case). So inputs are
decoded by a small pool of threads (:class:`DecodePool`, at most :func:`decode_workers`). Decoding and resizing
release the GIL for most of their time, as does invoke(). Results come out in input order, and what
is read ahead is bounded in count and in encoded bytes; what is decoded at once is bounded in decoded
bytes (:func:`decoded_bytes`, estimated from the header before any pixel is allocated).
"""

from __future__ import annotations

import io
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Generic, TypeVar

from PIL import Image

from edge.agent.sources.base import Item
from edge.inference.preprocess import DEFAULT_MAX_PIXELS, IMAGE_FORMATS
from edge.model.runtime import default_threads

# Encoded input bytes read ahead at most (a lone larger input still passes, one at a time): a burst of
# 50 MB infer payloads must not pile up in memory while the interpreter works through them.
READ_AHEAD_BYTES = 32 * 1024 * 1024
# Each decode of a non-JPEG image (no DCT scaling) may hold up to preprocess.max_image_pixels x 4 bytes.
MAX_DECODE_WORKERS = 4
# Pillow keeps RGB, RGBA, I and F images at 4 bytes a pixel; a 1-byte L/P image is converted to RGB (4)
# for a colour model. So 4 bytes a declared pixel bounds what one decode holds.
DECODED_BYTES_PER_PIXEL = 4
# Decoded bytes held by the decode threads at once: one largest image the pixel limit lets through, so
# that one always decodes, and several big PNGs never decode side by side past it.
DECODE_BYTES = DEFAULT_MAX_PIXELS * DECODED_BYTES_PER_PIXEL
# Inputs in a row the interpreter had to wait for, with more queued, before one more decode may run at once
WIDEN_AFTER = 3
# Waits in a loop with this timeout, so that a main thread waiting here still runs its SIGTERM handler.
POLL_S = 0.5

T = TypeVar("T")


def decode_workers(cores: int | None = None) -> int:
    """Decode threads: one per core this process may use, at most MAX_DECODE_WORKERS.

    Not ``cores - interpreter threads``: measured on 2 cores (int8 MobileNetV2, 3.2 ms per invoke at
    1 thread), a second decode thread beside a 1-thread interpreter takes 12 Mpx photos from 11.5 to
    7.3 ms each, and VGA/720p frames (decoded faster than invoked: one decode thread busy at a time)
    from 3.3 to 3.3-3.7 ms, within this shared machine's noise; beside a 2-thread interpreter, 12 Mpx
    photos go from 11.8 to 7.7 ms. Threads past the first start only when needed (:class:`DecodePool`).
    """
    cores = default_threads() if cores is None else cores
    return max(1, min(cores, MAX_DECODE_WORKERS))


def input_bytes(item: Item) -> int:
    """Encoded size of an input as it will be read (0 for decoded images and refusals)."""
    if isinstance(item.data, bytes):
        return len(item.data)
    if isinstance(item.data, Path):
        try:
            return item.data.stat().st_size
        except OSError:
            return 0  # reported by the decode, in order
    return 0


def decoded_bytes(item: Item, fit: tuple[int, int] | None = None) -> int:
    """What decoding ``item`` will hold, from its header alone (Pillow opens lazily): width x height x
    DECODED_BYTES_PER_PIXEL, for a JPEG at the DCT scale ``fit`` lets it decode at (as
    preprocess.decode_image does). 0 for what is no image file (decoded images, tensors, junk: the
    decode reports it)."""
    data = item.data
    if not isinstance(data, (bytes, Path)):
        return 0
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data, formats=IMAGE_FORMATS) as img:
            if fit is not None and img.format == "JPEG":
                img.draft("RGB", fit)  # header only: sets the size the decoder will produce
            w, h = img.size
    except Exception:  # not an image, unreadable: no pixels will be allocated for it
        return 0
    return w * h * DECODED_BYTES_PER_PIXEL


class ByteBudget:
    """Bytes in flight, bounded: take() waits until they fit, or until nothing else is in flight (so one
    input larger than the whole budget still passes, alone). Waiters are served first come, first served:
    a large input is not overtaken for ever by smaller ones. ``peak``: the most ever taken at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiting: deque[object] = deque()
        self._cond = threading.Condition()

    def take(self, n: int, stop: threading.Event | None = None) -> bool:
        """Wait for room for ``n`` bytes; False if ``stop`` was set first."""
        me = object()
        with self._cond:
            self._waiting.append(me)
            while self._waiting[0] is not me or (self.used and self.used + n > self.limit):
                if stop is not None and stop.is_set():
                    self._waiting.remove(me)
                    self._cond.notify_all()
                    return False
                self._cond.wait(POLL_S)
            self._waiting.popleft()
            self.used += n
            self.peak = max(self.peak, self.used)
            self._cond.notify_all()  # the next in line may fit too
            return True

    def give(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


class DecodePool(Generic[T]):
    """Decode threads, started one at a time: a second one only once the interpreter keeps waiting.

    A second decode thread doubles what big photos can be decoded at, but costs ~2 MB of RSS (its
    buffers in another malloc arena; agent_bench float-bmp: 94 -> 96 MB) that inputs decoded faster
    than invoked (BMPs, small frames) would pay for nothing. Work is taken first come, first served.
    """

    def __init__(
        self,
        fn: Callable[[Item], T],
        most: int,
        decoded: ByteBudget | None = None,
        fit: tuple[int, int] | None = None,
    ) -> None:
        self._fn = fn
        self.most = most
        self.decoded = decoded if decoded is not None else ByteBudget(DECODE_BYTES)
        self.fit = fit
        self.threads = 0
        self._work: queue.Queue[tuple[Item, Future[T]] | None] = queue.Queue()
        self.widen()

    def submit(self, item: Item) -> Future[T]:
        future: Future[T] = Future()
        self._work.put((item, future))
        return future

    def widen(self) -> None:
        if self.threads < self.most:
            self.threads += 1
            threading.Thread(target=self._run, name=f"edge-decode-{self.threads}", daemon=True).start()

    def close(self) -> None:
        for _ in range(self.threads):
            self._work.put(None)

    def _run(self) -> None:
        while (got := self._work.get()) is not None:
            item, future = got
            if future.set_running_or_notify_cancel():
                # Given back as soon as prepare returns: the decoded picture is dropped then (the tensor
                # handed on is model-sized), and a holder never waits for the consumer, so no deadlock.
                size = decoded_bytes(item, self.fit)
                self.decoded.take(size)
                try:
                    future.set_result(self._fn(item))
                except BaseException as exc:  # prepare returns its errors; this is a bug: hand it on
                    future.set_exception(exc)
                finally:
                    self.decoded.give(size)


def prefetched(
    items: Iterator[Item],
    prepare: Callable[[Item], T],
    *,
    workers: int,
    stop: threading.Event,
    max_bytes: int = READ_AHEAD_BYTES,
    decoded: ByteBudget | None = None,
    fit: tuple[int, int] | None = None,
) -> Iterator[tuple[Item, T]]:
    """``(item, prepare(item))`` for each item, in order, ``prepare`` running on up to ``workers`` threads
    (one at first: see :class:`DecodePool`), together holding at most ``decoded`` bytes of decoded
    pictures (default DECODE_BYTES; ``fit``: the model's input width and height, for JPEG's DCT scaling).

    An exception raised by ``items`` (e.g. a camera that stopped) is re-raised here, after the inputs
    before it; ``prepare`` is expected to return its errors, not raise them.
    """
    pool: DecodePool[T] = DecodePool(prepare, workers, decoded, fit)
    budget = ByteBudget(max_bytes)

    q: queue.Queue[tuple[Item, Future[T], int] | BaseException | None] = queue.Queue(
        maxsize=workers + 1  # every decode thread busy, and one more ready for the interpreter
    )

    def produce() -> None:
        try:
            for item in items:
                size = input_bytes(item)
                if not budget.take(size, stop):
                    break  # stopping: hand on what is in flight, then end
                q.put((item, pool.submit(item), size))
            q.put(None)
        except BaseException as exc:  # re-raised in the consumer's thread
            q.put(exc)

    threading.Thread(target=produce, name="edge-prefetch", daemon=True).start()
    behind = 0
    try:
        while True:
            try:
                got = q.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if got is None:
                return
            if isinstance(got, BaseException):
                raise got
            item, future, size = got
            if future.done() or q.empty():
                behind = 0
            else:  # the interpreter waits for a decode with more inputs queued: decoding is behind
                behind += 1
                if behind == WIDEN_AFTER:
                    pool.widen()
                    behind = 0
            while True:
                try:
                    result = future.result(timeout=POLL_S)
                    break
                except FutureTimeout:
                    continue
            budget.give(size)
            yield item, result
    finally:
        pool.close()
