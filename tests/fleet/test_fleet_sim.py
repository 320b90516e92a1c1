"""benchmarks/fleet_sim.py end to end at toy size: it must keep running in CI (timings are not asserted).

The run includes its two staged rollouts through the real ``edge-fleet rollout``: a model that agrees is
promoted on every simulated device, another task's is stopped on the canaries, and every model/set
message is answered."""

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
            "--rollout-canary",
            "2",
            "--rollout-batch",
            "5",
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
    ro, rejected = res["rollout"], res["rollout_rejected"]
    assert ro["exit"] == 0 and ro["devices"] == {"active": 12} and ro["serving_new_sha256"] == 12
    assert ro["messages"]["sent"] == {"shadow": 12, "activate": 12} and ro["batches"] == 3
    assert rejected["exit"] == 3 and "agreement" in rejected["reason"]
    assert rejected["messages"]["sent"] == {"shadow": 2, "drop": 2}  # the canaries only
    assert res["model_set_lost"] == 0 and res["model_set_answered_by_devices"] == res["model_set_sent"]
    assert res["watch_messages_by_kind"]["shadow"] >= 2
