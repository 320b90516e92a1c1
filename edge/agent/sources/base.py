"""What every input source yields: named inputs, and a hook to call once a result is safely spooled."""

from __future__ import annotations

import os
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


def escaped_name(name: str) -> str:
    """A file name as text that survives JSON and SQLite: itself when it is UTF-8; else its bytes with
    backslashes doubled and each non-UTF-8 byte as ``\\xNN`` (so the bytes can be recovered)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:  # os.scandir gave surrogate escapes for the undecodable bytes
        return os.fsencode(name).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
