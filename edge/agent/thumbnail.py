"""``--publish-thumbnail``: a small JPEG of the input, now and then, for dashboards to draw results on.

The rate gate is asked when an input is prepared: a due input keeps its decoded picture (the
pipeline's own, so it is what the model saw, before any resize or letterbox; a JPEG is already at
the DCT scale that covers the model's input). The rest runs on the finisher thread, after the
prediction is spooled (its seq is known then): downscale, encode, tag (:mod:`edge.contract.thumbnail`).
Decoding again would cost as much as the pipeline's decode (~20 ms for a 12 Mpx photo here);
this costs 1-3 ms. A thumbnail that cannot be made is skipped, never an error: the prediction is
what matters.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable

from PIL import Image

from edge.contract import thumbnail
from edge.inference.preprocess import to_pixels

log = logging.getLogger("edge.agent")

MAX_EDGE = 320  # longest side in pixels
QUALITY = 70
MAX_BYTES = 64 * 1024  # hard cap on the payload, tag included
RATE = 1.0  # thumbnails per second, at most


def encode(
    img: Image.Image, max_edge: int = MAX_EDGE, quality: int = QUALITY, max_bytes: int = MAX_BYTES
) -> bytes | None:
    """``img`` downscaled (aspect kept, longest side <= ``max_edge``) as a JPEG that leaves room for
    the tag within ``max_bytes``: lower qualities first, then half the size; None if nothing fits."""
    budget = max_bytes - thumbnail.HEADER_ROOM
    w, h = img.size
    edge = max_edge
    while edge >= 16 and budget > 0:
        f = min(1.0, edge / max(w, h))
        small = _small(img, (max(1, round(w * f)), max(1, round(h * f))))
        for q in dict.fromkeys((quality, min(quality, 50), min(quality, 30))):
            buf = io.BytesIO()
            small.save(buf, format="JPEG", quality=q)
            if buf.tell() <= budget:
                return buf.getvalue()
        edge //= 2
    return None


def _small(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    if img.mode in ("RGB", "L"):
        # reducing_gap: a box reduce first, then bilinear, as Image.thumbnail does (big frames fast)
        return img if img.size == size else img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    # 16-bit, alpha, palette, CMYK...: the pipeline's own conversion to 8-bit RGB
    return Image.fromarray(to_pixels(img, size, 3, Image.Resampling.BILINEAR), "RGB")


class Thumbnails:
    """The rate gate and the renderer; ``render`` is called on one thread (the finisher)."""

    def __init__(
        self,
        *,
        max_edge: int = MAX_EDGE,
        quality: int = QUALITY,
        max_bytes: int = MAX_BYTES,
        rate: float = RATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_edge, self.quality, self.max_bytes = max_edge, quality, max_bytes
        self.interval = 1.0 / rate
        self.clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()
        self.published = 0
        self.skipped = 0  # could not be made (nothing fits the byte cap)
        self.last_ms: float | None = None  # what the last one cost, decode to tag

    def due(self) -> bool:
        """True at most ``rate`` times a second (the first time always); a True claims the slot."""
        now = self.clock()
        with self._lock:
            if self._last is not None and now - self._last < self.interval:
                return False
            self._last = now
            return True

    def render(self, img: Image.Image, seq: int, ts: str) -> bytes | None:
        """The tagged JPEG of one decoded input, or None (logged) when it cannot be made."""
        t0 = time.perf_counter()
        jpeg = None
        try:
            jpeg = encode(img, self.max_edge, self.quality, self.max_bytes)
        except Exception as exc:  # e.g. an image mode Pillow cannot convert: the prediction went out
            log.debug("no thumbnail for seq %d: %s", seq, exc)
        if jpeg is None:
            self.skipped += 1
            return None
        out = thumbnail.tag(jpeg, seq, ts)
        self.published += 1
        self.last_ms = (time.perf_counter() - t0) * 1e3
        return out
