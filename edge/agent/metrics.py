"""Rolling latency window and process health (RSS, CPU temperature) for the metrics topic."""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

THERMAL = Path("/sys/class/thermal")


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
        self._samples: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self.errors = 0
        self.total = 0

    def add(self, total_ms: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._samples.append((now, total_ms))
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
            values = np.array([v for _, v in self._samples], dtype=np.float64)
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
        }


def health() -> dict[str, Any]:
    return {"rss_mb": rss_mb(), "cpu_temp_c": cpu_temp_c()}
