"""What the agent says about the machine it runs on (status message)."""

from __future__ import annotations

import platform
import socket
import sys
from pathlib import Path

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def board(path: Path = DEVICE_TREE_MODEL) -> str | None:
    """The board name (e.g. ``Raspberry Pi 4 Model B Rev 1.4``), None off device-tree machines."""
    try:
        return path.read_bytes().rstrip(b"\x00\n").decode("utf-8", "replace") or None
    except OSError:
        return None


def arch() -> str:
    return platform.machine()


def hostname() -> str:
    return socket.gethostname()


def python_version() -> str:
    return f"{sys.implementation.name} {platform.python_version()}"
