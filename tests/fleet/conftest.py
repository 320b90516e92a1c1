"""Fixtures of the fleet tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto, free_port


@pytest.fixture
def bridged(tmp_path: Path) -> Iterator[tuple[Mosquitto, Mosquitto]]:
    """Broker a, and broker b bridged to it for everything under edge/ (both directions)."""
    a = Mosquitto(workdir=tmp_path / "a")
    a.workdir.mkdir()
    a.start()
    b = Mosquitto(
        workdir=tmp_path / "b",
        port=free_port(),
        extra_conf=f"connection b-to-a\naddress 127.0.0.1:{a.port}\ntopic edge/# both 1\n",
    )
    b.workdir.mkdir()
    try:
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()
