from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.process import Proc


@pytest.fixture
def spawn() -> Iterator[Any]:
    """``spawn(*args, module="edge.watch")``: a child whose stdout lines the test reads; killed afterwards."""
    procs: list[Proc] = []

    def start(*args: str, module: str = "edge.watch") -> Proc:
        p = Proc([sys.executable, "-m", module, *args])
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
