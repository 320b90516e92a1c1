"""Progress lines: rate and ETA on a terminal, one line per step in logs."""

from __future__ import annotations

import io
import sys

from converter import progress


def test_rate_and_eta_text() -> None:
    assert progress.rate_eta(0, 10, 1.0) == ""
    assert progress.rate_eta(5, 10, 2.0) == "2.5/s ETA 2s"
    assert progress.rate_eta(10, 10, 2.0) == "5.0/s"


def test_log_output_is_one_line_per_step(monkeypatch) -> None:
    err = io.StringIO()  # not a TTY, as in CI logs
    monkeypatch.setattr(sys, "stderr", err)
    assert list(progress.iterate(range(50), "calibration", 50, True)) == list(range(50))
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("calibration") and "50/50" in lines[0] and "/s" in lines[0]
