from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto

ROOT = Path(__file__).resolve().parents[1]
# Real third-party models live beside the project (../shared/testdata/coral); never copied in.
CORAL = Path(os.environ.get("EDGE_CORAL_TESTDATA", ROOT.parent / "shared" / "testdata" / "coral"))


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child processes that import this checkout (worktrees and CI alike)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def run_module(
    module: str, *args: str, timeout: float = 300, check: bool = False, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` with this checkout importable; captures text output."""
    env = kwargs.pop("env", None) or subprocess_env()
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        env=env,
        **kwargs,
    )  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def coral() -> Path:
    assert CORAL.is_dir(), f"Coral test data not found at {CORAL} (set EDGE_CORAL_TESTDATA)"
    return CORAL


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free loopback port, one per test."""
    broker = Mosquitto(workdir=tmp_path / "mosquitto")
    broker.workdir.mkdir()
    broker.start()
    yield broker
    broker.stop()
