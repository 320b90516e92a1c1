"""What the machine was doing around a benchmark: CPU governor, clock, temperature, throttling, memory.

Every reading is best effort and ``None`` where the board does not expose it
(containers, x86 laptops without cpufreq, ...): a missing sensor must never
fail a benchmark. ``root`` lets tests point the readers at a fake ``/sys``
tree, since this machine has no Pi firmware and no Coral PCIe card.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path("/")


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_text(errors="replace").strip("\x00 \n\t") or None
    except OSError:
        return None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def board(root: Path = ROOT) -> str | None:
    """The board's model string (``Raspberry Pi 4 Model B Rev 1.4``), from the device tree."""
    return _read(root, "proc/device-tree/model")


def arch() -> str:
    return platform.machine()


def governor(root: Path = ROOT) -> str | None:
    return _read(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def freq_mhz(root: Path = ROOT) -> float | None:
    """Current clock of CPU 0: cpufreq (kHz) where present, else ``cpu MHz`` from /proc/cpuinfo (x86)."""
    khz = _number(_read(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"))
    if khz is not None:
        return round(khz / 1000.0, 1)
    info = _read(root, "proc/cpuinfo") or ""
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "cpu mhz":
            mhz = _number(value.strip())
            return round(mhz, 1) if mhz is not None else None
    return None


def cpu_temp_c(root: Path = ROOT) -> float | None:
    """SoC temperature: the first thermal zone (the CPU on a Pi), in degrees Celsius."""
    milli = _number(_read(root, "sys/class/thermal/thermal_zone0/temp"))
    return round(milli / 1000.0, 1) if milli is not None else None


def edgetpu_temp_c(root: Path = ROOT) -> float | None:
    """Temperature of a PCIe/M.2 Coral (the apex driver); ``None`` for the USB stick or no Coral."""
    milli = _number(_read(root, "sys/class/apex/apex_0/temp"))
    return round(milli / 1000.0, 1) if milli is not None else None


# Bits of `vcgencmd get_throttled` (Raspberry Pi firmware).
THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm-frequency-capped",
    2: "throttled",
    3: "soft-temperature-limit",
    16: "under-voltage-occurred",
    17: "arm-frequency-capping-occurred",
    18: "throttling-occurred",
    19: "soft-temperature-limit-occurred",
}


def throttled(vcgencmd: str | None = None) -> str | None:
    """``vcgencmd get_throttled`` as its hex string (``0x0`` = never throttled), ``None`` off a Pi."""
    exe = vcgencmd or shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    _, _, value = out.strip().partition("=")
    try:
        int(value, 16)
    except ValueError:
        return None
    return value


def throttle_flags(value: str | None) -> list[str] | None:
    """Names of the bits set in a ``get_throttled`` value."""
    if value is None:
        return None
    bits = int(value, 16)
    return [name for bit, name in THROTTLE_BITS.items() if bits >> bit & 1]


def _status_kb(key: str) -> float | None:
    for line in (_read(ROOT, "proc/self/status") or "").splitlines():
        if line.startswith(key + ":"):
            return _number(line.split()[1])
    return None


def rss_mb() -> float | None:
    """Current resident set size of this process (VmRSS)."""
    kb = _status_kb("VmRSS")
    return round(kb / 1024.0, 2) if kb is not None else None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (VmHWM, or getrusage where /proc is missing)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb = ru / 1024.0 if sys.platform == "darwin" else float(ru)  # bytes on macOS, KiB elsewhere
    return round(kb / 1024.0, 2)


@dataclass(frozen=True)
class Snapshot:
    """Readings taken once, before or after the timed runs."""

    freq_mhz: float | None
    temp_c: float | None
    edgetpu_temp_c: float | None
    throttled: str | None


def snapshot(root: Path = ROOT, vcgencmd: str | None = None) -> Snapshot:
    return Snapshot(
        freq_mhz=freq_mhz(root),
        temp_c=cpu_temp_c(root),
        edgetpu_temp_c=edgetpu_temp_c(root),
        throttled=throttled(vcgencmd),
    )


def cpu_report(before: Snapshot, after: Snapshot, root: Path = ROOT) -> dict[str, object]:
    """The report's ``cpu`` object. ``throttled`` is the reading after the runs (its sticky bits cover them)."""
    value = after.throttled if after.throttled is not None else before.throttled
    return {
        "governor": governor(root),
        "count": os.cpu_count(),
        "freq_mhz_before": before.freq_mhz,
        "freq_mhz_after": after.freq_mhz,
        "temp_c_before": before.temp_c,
        "temp_c_after": after.temp_c,
        "throttled": value,
        "throttled_flags": throttle_flags(value),
    }


def edgetpu_report(before: Snapshot, after: Snapshot) -> dict[str, object] | None:
    if before.edgetpu_temp_c is None and after.edgetpu_temp_c is None:
        return None
    return {"temp_c_before": before.edgetpu_temp_c, "temp_c_after": after.edgetpu_temp_c}


def as_dict(s: Snapshot) -> dict[str, object]:
    return asdict(s)
