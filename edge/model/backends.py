"""Discovery of the TFLite runtimes a machine has, in order of preference."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from edge.errors import RuntimeNotFoundError

# Preference order for --runtime auto: the maintained runtime first; TensorFlow
# last because importing it costs ~10 s and ~600 MB on a board.
RUNTIME_NAMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
_MODULES = {
    "ai_edge_litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite_runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    "tensorflow": ("tensorflow.lite", "tensorflow"),
}
_ALIASES = {
    "ai-edge-litert": "ai_edge_litert",
    "litert": "ai_edge_litert",
    "tflite-runtime": "tflite_runtime",
    "tf": "tensorflow",
}


@dataclass(frozen=True)
class Runtime:
    name: str  # one of RUNTIME_NAMES
    version: str
    module: ModuleType

    @property
    def interpreter_class(self) -> Any:
        return self.module.Interpreter

    def load_delegate(self, library: str, options: dict[str, Any] | None = None) -> Any:
        if self.name == "tensorflow":
            return self.module.experimental.load_delegate(library, options or {})
        return self.module.load_delegate(library, options or {})


def _version(dist: str, module: ModuleType) -> str:
    # The package's own __version__ first: importlib.metadata (with zipfile, email, csv) costs the
    # agent ~1 MB of RSS for its whole life, for one string.
    package = sys.modules.get(module.__name__.split(".")[0])
    version = getattr(package, "__version__", None)
    if isinstance(version, str) and version:
        return version
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "unknown"))


def _import(name: str) -> Runtime:
    modname, dist = _MODULES[name]
    module = importlib.import_module(modname)
    return Runtime(name=name, version=_version(dist, module), module=module)


def normalize_name(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name != "auto" and name not in RUNTIME_NAMES:
        raise RuntimeNotFoundError(
            f"--runtime must be one of auto, {', '.join(RUNTIME_NAMES)}; received {name!r}",
            "pick one of the listed names",
        )
    return name


def select_runtime(name: str = "auto") -> Runtime:
    """Import the requested runtime, or the first available one for ``auto``."""
    name = normalize_name(name)
    candidates = RUNTIME_NAMES if name == "auto" else (name,)
    errors = []
    for cand in candidates:
        try:
            return _import(cand)
        except Exception as exc:  # ImportError, or a runtime crashing at import (numpy ABI)
            errors.append(f"{cand}: {type(exc).__name__}: {exc}")
    detail = "; ".join(errors)
    if name == "auto":
        raise RuntimeNotFoundError(
            f"no TFLite runtime could be imported ({detail})",
            "pip install 'edge-ml-toolkit[agent]' (ai-edge-litert), or "
            "'edge-ml-toolkit[tflite-runtime]' (tflite-runtime with numpy<2)",
        )
    hint = (
        "pip install ai-edge-litert"
        if name == "ai_edge_litert"
        else (
            "pip install tflite-runtime 'numpy<2' (it crashes with numpy 2)"
            if name == "tflite_runtime"
            else "pip install tensorflow"
        )
    )
    raise RuntimeNotFoundError(f"runtime {name!r} is not usable here ({detail})", hint)


def available_runtimes() -> list[str]:
    """Names of the runtimes importable in this process (imports them)."""
    found = []
    for name in RUNTIME_NAMES:
        try:
            _import(name)
        except Exception:
            continue
        found.append(name)
    return found
