"""Coral Edge TPU delegate (libedgetpu)."""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path
from typing import Any

from edge.errors import DelegateError
from edge.model.backends import Runtime
from edge.model.delegates.base import LoadedDelegate

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"


def default_library() -> str:
    system = platform.system()
    if system == "Darwin":
        return "libedgetpu.1.dylib"
    if system == "Windows":
        return "edgetpu.dll"
    return "libedgetpu.so.1"


def is_edgetpu_model(custom_ops: tuple[str, ...] | list[str]) -> bool:
    return EDGETPU_CUSTOM_OP in custom_ops


def cpu_twin_path(model: str | Path) -> Path | None:
    """``x_edgetpu.tflite`` -> ``x.tflite`` when that file exists (edgetpu_compiler's naming)."""
    p = Path(model)
    if p.stem.endswith("_edgetpu"):
        twin = p.with_name(p.stem[: -len("_edgetpu")] + p.suffix)
        if twin.is_file():
            return twin
    return None


class EdgeTpuLoader:
    name = "edgetpu"

    def __init__(self, library: str | None = None) -> None:
        # EDGE_EDGETPU_LIBRARY lets a user point at a non-standard install.
        self.library = library or os.environ.get("EDGE_EDGETPU_LIBRARY") or default_library()

    def load(self, runtime: Runtime, options: dict[str, Any]) -> LoadedDelegate:
        opts = {k: str(v) for k, v in options.items() if v is not None}
        try:
            # Probe with ctypes first: the runtimes' load_delegate leaves a noisy
            # half-built object behind when the library is missing.
            ctypes.CDLL(self.library)
            handle = runtime.load_delegate(self.library, opts)
        except (OSError, ValueError, RuntimeError) as exc:
            device = opts.get("device", "any")
            raise DelegateError(
                f"No Edge TPU was detected: loading {self.library} (device {device}) failed: {exc}",
                "install the Edge TPU runtime (apt install libedgetpu1-std from the Coral repository), plug the "
                "Coral USB stick into a USB 3 port or check the PCIe/M.2 driver (ls /dev/apex_0), add the user "
                "to the plugdev/apex group, or run with --delegate cpu on the CPU model",
            ) from exc
        return LoadedDelegate(
            name=self.name, handle=handle, detail=f"{self.library} device={opts.get('device', 'auto')}"
        )
