"""Fixtures of the transport tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.agent.conftest import agents, subscriber  # noqa: F401 - agent processes, for the shutdown tests
from tests.support.broker import Mosquitto
from tests.transport._helpers import Collector


@pytest.fixture
def collector(mosquitto: Mosquitto) -> Iterator[Callable[[str], Collector]]:
    made: list[Collector] = []

    def make(topic: str = "edge/#") -> Collector:
        c = Collector(mosquitto, topic)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
