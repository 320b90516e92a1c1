"""A single image file (``--source cat.jpg``): processed once; without --once the agent then idles."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from edge.agent.sources.base import Item, escaped_name


class FileSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file:{path}"

    def items(self, stop: threading.Event, once: bool) -> Iterator[Item]:
        if not stop.is_set():
            yield Item(escaped_name(self.path.name), self.path)  # a JSON-safe `source`
        if not once:
            # A single file is a finite source; keep the agent up (commands, metrics) until stopped.
            stop.wait()

    def done(self, item: Item) -> None:
        pass

    def close(self) -> None:
        pass
