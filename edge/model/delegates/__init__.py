"""Hardware delegates, one module per accelerator behind :class:`DelegateLoader`.

``load_model(..., delegates=...)`` takes a mapping of name -> loader, which is
the seam tests use to stand in for hardware this machine does not have.
"""

from __future__ import annotations

from edge.model.delegates.base import DelegateLoader, LoadedDelegate
from edge.model.delegates.edgetpu import EdgeTpuLoader, cpu_twin_path, is_edgetpu_model

DEFAULT_LOADERS: dict[str, DelegateLoader] = {"edgetpu": EdgeTpuLoader()}

__all__ = [
    "DEFAULT_LOADERS",
    "DelegateLoader",
    "EdgeTpuLoader",
    "LoadedDelegate",
    "cpu_twin_path",
    "is_edgetpu_model",
]
