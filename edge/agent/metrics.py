"""Rolling latency window, label histogram and process health (RSS, CPU temperature) for the metrics topic."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

THERMAL = Path("/sys/class/thermal")
# The metrics message names at most this many labels (the most frequent); the rest are summed into
# "other", so a 1000-class model cannot blow up a message or a monitoring system's series count.
LABEL_TOP_N = 20


def predicted_labels(result_key: str, result: Any) -> tuple[str, ...]:
    """What one inference predicted, for the label histogram: a classifier's top-1 label, every label a
    detector found; nothing for raw outputs. Unlabelled classes count under their index."""
    if result_key not in ("top_k", "detections") or not result:
        return ()
    items = result[:1] if result_key == "top_k" else result
    return tuple(str(it["index"]) if it.get("label") is None else str(it["label"]) for it in items)


def label_histogram(counts: Counter[str], top_n: int = LABEL_TOP_N) -> dict[str, Any]:
    """``{"counts": {label: n} for the top_n most frequent, "other": the rest}``; ties sort by label
    so the same window always gives the same message."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"counts": dict(ranked[:top_n]), "other": sum(n for _, n in ranked[top_n:])}


def rss_mb(status: Path = Path("/proc/self/status")) -> float | None:
    """Resident set size of this process in MB (VmRSS), None where /proc is absent."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 2)
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_temp_c(root: Path = THERMAL) -> float | None:
    """CPU temperature from the first readable thermal zone (preferring a CPU one); None if unreadable."""
    try:
        zones = sorted(root.glob("thermal_zone*"))
    except OSError:
        return None

    def kind(z: Path) -> str:
        try:
            return (z / "type").read_text().strip().lower()
        except OSError:
            return ""

    # Raspberry Pi: cpu-thermal; x86: x86_pkg_temp; else whatever zone exists.
    zones.sort(key=lambda z: 0 if any(w in kind(z) for w in ("cpu", "x86_pkg", "soc")) else 1)
    for z in zones:
        try:
            return round(int((z / "temp").read_text().strip()) / 1000.0, 1)
        except (OSError, ValueError):
            continue
    return None


class LatencyWindow:
    """Total latency of the inferences of the last ``window_s`` seconds (thread-safe)."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float, tuple[str, ...]]] = deque()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self.errors = 0
        self.total = 0

    def add(self, total_ms: float, now: float | None = None, labels: Sequence[str] = ()) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._samples.append((now, total_ms, tuple(labels)))
            self.total += 1
            self._trim(now)

    def add_error(self) -> None:
        with self._lock:
            self.errors += 1

    def _trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            values = np.array([v for _, v, _ in self._samples], dtype=np.float64)
            counts: Counter[str] = Counter(label for _, _, labels in self._samples for label in labels)
            span = min(self.window_s, max(now - self._started, 1e-3))
        pct: dict[str, float | None] = {"p50": None, "p90": None, "p99": None}
        if values.size:
            p50, p90, p99 = np.percentile(values, [50, 90, 99])
            pct = {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3)}
        return {
            "window_s": round(span, 3),
            "inferences": int(values.size),
            "inferences_per_s": round(values.size / span, 3),
            "latency_ms": pct,
            "labels": label_histogram(counts),
        }


def health() -> dict[str, Any]:
    return {"rss_mb": rss_mb(), "cpu_temp_c": cpu_temp_c()}
