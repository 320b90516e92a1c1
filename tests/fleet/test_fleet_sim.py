"""benchmarks/fleet_sim.py end to end at toy size: it must keep running in CI (figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT
from tests.support.process import subprocess_env


def test_fleet_sim_small_run_lists_everyone_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "fleet_sim.py"),
            "--devices",
            "12",
            "--procs",
            "2",
            "--duration",
            "4",
            "--rate",
            "2",
            "--metrics-interval",
            "1",
            "--ls-runs",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(out.read_text())
    assert (
        res["connected"] == 12 and res["ls_idle_listed_online"] == 12 and res["ls_busy_listed_online"] == [12]
    )
    assert res["predictions_sent"] >= 12 * 4 and res["predictions_lost"] == 0
    assert res["predictions_received_unique"] == res["predictions_sent"]
    assert res["watch_malformed"] == 0 and res["watch_messages_by_kind"]["metrics"] >= 12
