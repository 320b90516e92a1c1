"""Child processes that import this checkout (worktrees and CI alike)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.support import ROOT


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: this checkout first on PYTHONPATH, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def run_python(
    *args: str | Path, python: str = sys.executable, timeout: float = 300, check: bool = False, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``python args`` from the repository root with this checkout importable; captures text output.

    ``python`` may be another interpreter (the tflite-runtime venv); ``env`` replaces subprocess_env().
    """
    kwargs.setdefault("cwd", ROOT)
    env = kwargs.pop("env", None) or subprocess_env()
    return subprocess.run(
        [python, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        env=env,
        **kwargs,
    )


def run_module(module: str, *args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``python -m module args``, as run_python."""
    return run_python("-m", module, *args, **kwargs)


class Proc:
    """A child process whose stdout lines are read in the background (tests wait with a timeout)."""

    def __init__(self, args: list[str]) -> None:
        self.popen = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env()
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)

    def line(self, timeout: float = 15) -> str:
        return self.lines.get(timeout=timeout)

    def finish(self, timeout: float = 30) -> tuple[int, list[str], str]:
        rc = self.popen.wait(timeout)
        assert self.popen.stderr is not None
        err = self.popen.stderr.read()
        rest = []
        while True:
            try:
                rest.append(self.lines.get(timeout=1 if not self.lines.empty() else 0.2))
            except queue.Empty:
                break
        return rc, rest, err

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
