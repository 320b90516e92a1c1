"""Transport test helpers: child processes (tests/transport/child.py) and reading their output."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.process import subprocess_env

CHILD = Path(__file__).with_name("child.py")


def start_child(*args: str) -> subprocess.Popen[str]:
    """``python tests/transport/child.py args`` with this checkout importable; stdout is a pipe of lines."""
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        bufsize=1,
    )


def read_until(proc: subprocess.Popen[str], predicate: Callable[[str], bool], timeout: float) -> list[str]:
    """Lines from the child until one satisfies ``predicate``; fails with the child's stderr otherwise."""
    lines: list[str] = []
    box: list[str] = []
    deadline = time.monotonic() + timeout

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if predicate(line.rstrip("\n")):
                box.append(line)
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    if not box:
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(
            f"child did not print the expected line within {timeout}s; "
            f"got {lines[-5:]}; stderr:\n{err[-3000:]}"
        )
    return lines
