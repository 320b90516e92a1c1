from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from edge.model.backends import Runtime


@dataclass(frozen=True)
class LoadedDelegate:
    name: str  # e.g. "edgetpu"
    handle: Any  # what the runtime's Interpreter takes in experimental_delegates
    detail: str = ""  # e.g. the device the delegate opened


class DelegateLoader(Protocol):
    """Loads one accelerator's delegate for a runtime, or raises DelegateError saying what to do."""

    name: str

    def load(self, runtime: Runtime, options: dict[str, Any]) -> LoadedDelegate: ...
