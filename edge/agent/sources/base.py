"""What every input source yields: named inputs, and a hook to call once a result is safely spooled."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from edge.errors import EdgeError


@dataclass(frozen=True)
class Item:
    name: str  # file name, or the request's correlation id (the prediction's `source`)
    data: bytes | Path | Image.Image | EdgeError  # an EdgeError: the source refused it (reported on errors)
    correlation_data: bytes | None = None  # MQTT 5 request/response
    response_topic: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    description: str

    def items(self, stop: threading.Event, once: bool) -> Iterator[Item]:
        """Yield inputs until ``stop`` is set (or, with ``once``, until what the source holds is consumed)."""
        ...

    def done(self, item: Item) -> None:
        """The item's result (or error) is spooled: never hand it out again."""
        ...

    def close(self) -> None: ...


DoneHook = Callable[[Item], None]
