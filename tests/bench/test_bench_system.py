"""Machine readings: real ones here (x86, container: mostly null), and a Pi/Coral sysfs faked behind the
``root``/``vcgencmd`` seam because this machine has neither a Pi's firmware nor a PCIe Coral."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.bench import system


def fake_pi(root: Path) -> tuple[Path, Path]:
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    cpufreq = root / "sys/devices/system/cpu/cpu0/cpufreq"
    cpufreq.mkdir(parents=True)
    (cpufreq / "scaling_governor").write_text("ondemand\n")
    (cpufreq / "scaling_cur_freq").write_text("1500000\n")
    (root / "sys/class/thermal/thermal_zone0").mkdir(parents=True)
    (root / "sys/class/thermal/thermal_zone0/temp").write_text("48312\n")
    (root / "sys/class/apex/apex_0").mkdir(parents=True)
    (root / "sys/class/apex/apex_0/temp").write_text("41050\n")
    vcgencmd = root / "vcgencmd"
    vcgencmd.write_text('#!/bin/sh\n[ "$1" = get_throttled ] && echo throttled=0x50005\n')
    vcgencmd.chmod(0o755)
    return root, vcgencmd


@pytest.mark.hardware
def test_pi_and_coral_readings(tmp_path: Path) -> None:
    root, vcgencmd = fake_pi(tmp_path)
    assert system.board(root) == "Raspberry Pi 4 Model B Rev 1.4"
    assert system.governor(root) == "ondemand"
    snap = system.snapshot(root, str(vcgencmd))
    assert snap == system.Snapshot(freq_mhz=1500.0, temp_c=48.3, edgetpu_temp_c=41.0, throttled="0x50005")
    cpu = system.cpu_report(snap, snap, root)
    assert cpu["throttled_flags"] == [
        "under-voltage",
        "throttled",
        "under-voltage-occurred",
        "throttling-occurred",
    ]
    assert system.edgetpu_report(snap, snap) == {"temp_c_before": 41.0, "temp_c_after": 41.0}


def test_unreadable_sensors_are_null(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\ncpu MHz\t\t: 2100.000\n")
    snap = system.snapshot(tmp_path, str(tmp_path / "no-vcgencmd"))
    assert snap == system.Snapshot(freq_mhz=2100.0, temp_c=None, edgetpu_temp_c=None, throttled=None)
    assert system.board(tmp_path) is None and system.governor(tmp_path) is None
    assert system.edgetpu_report(snap, snap) is None
    assert system.cpu_report(snap, snap, tmp_path)["throttled_flags"] is None


def test_memory_readings_are_this_process() -> None:
    before = system.rss_mb()
    assert before is not None and system.peak_rss_mb() >= before > 1
    blob = os.urandom(64 * 1024 * 1024)  # 64 MB really resident
    assert system.rss_mb() - before > 50  # type: ignore[operator]
    assert system.peak_rss_mb() >= before + 50
    del blob
