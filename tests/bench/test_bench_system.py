"""Machine readings: real ones here (x86, container: mostly null), and a Pi/Coral sysfs faked behind the
``root``/``vcgencmd`` seam because this machine has neither a Pi's firmware nor a PCIe Coral."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.bench import system
from tests.support.process import subprocess_env


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


# Run in a fresh process: in the test process, garbage that earlier tests left in reference cycles
# (interpreters, arrays) is freed by whichever full collection happens to run between the two readings,
# so RSS could even shrink while this test allocates: the test passed or failed depending on the order.
_MEMORY_PROBE = """
import json, os
from edge.bench import system

before, peak_before = system.rss_mb(), system.peak_rss_mb()
blob = os.urandom(64 * 1024 * 1024)  # 64 MB really resident
print(json.dumps({"before": before, "peak_before": peak_before,
                  "after": system.rss_mb(), "peak_after": system.peak_rss_mb()}))
"""


def test_memory_readings_are_this_process() -> None:
    r = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["before"] is not None and m["peak_before"] >= m["before"] > 1
    assert m["after"] - m["before"] > 50, m
    assert m["peak_after"] >= m["before"] + 50, m
