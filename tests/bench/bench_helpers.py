"""Helpers for the edge-bench tests (a plain module: `conftest` names are ambiguous across areas)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.process import run_module

# Short runs: these tests check behaviour, not speed (figures live in benchmarks/).
QUICK = ("--runs", "20", "--min-secs", "0", "--warmup", "2", "--warmup-min-secs", "0")


def bench_cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_module("edge.bench", *(str(a) for a in args), timeout=timeout)
