"""Fixtures every test folder may use (registered in tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import DATA
from tests.support.agent import AgentProcess
from tests.support.broker import Mosquitto
from tests.support.mqtt import Capture


@pytest.fixture(scope="session")
def coral() -> Path:
    """The Coral test models and images (tests/data, copies of google-coral/test_data)."""
    return DATA


@pytest.fixture(scope="session")
def tflite_python() -> str:
    """The python of the venv with tflite-runtime 2.14 and numpy<2, the device's other runtime."""
    python = os.environ.get("EDGE_TFLITE_RUNTIME_PYTHON", "")
    assert python and Path(python).exists(), (
        f"EDGE_TFLITE_RUNTIME_PYTHON={python!r} must name the python of a venv with tflite-runtime==2.14.0 "
        "and numpy<2: ./dev.sh setup creates .venv-tflite and ./dev.sh test exports it; locally "
        "export EDGE_TFLITE_RUNTIME_PYTHON=$PWD/.venv-tflite/bin/python"
    )
    return python


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free loopback port, one per test."""
    broker = Mosquitto(workdir=tmp_path / "mosquitto")
    broker.workdir.mkdir()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def capture(mosquitto: Mosquitto) -> Iterator[Callable[..., Capture]]:
    """``capture(*topics, persistent=False)``: a subscriber on the test's mosquitto, closed afterwards."""
    made: list[Capture] = []

    def make(*topics: str, **kw: Any) -> Capture:
        c = Capture(mosquitto, *topics, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def agents() -> Iterator[Callable[..., AgentProcess]]:
    """``agents(args, log, python=None, env=None)``: agent processes, killed after the test."""
    started: list[AgentProcess] = []

    def start(args: list[str], log: Path, **kw: Any) -> AgentProcess:
        a = AgentProcess(args, log, **kw)
        started.append(a)
        return a

    yield start
    for a in started:
        a.kill()
        a.fh.close()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    """A trusted update-signing key pair and an untrusted one."""
    from edge.ota.keys import generate_keypair, load_private_key

    priv, pub, kid = generate_keypair(tmp_path / "keys" / "update.key")
    other, other_pub, _ = generate_keypair(tmp_path / "keys" / "other.key")
    return {
        "private": priv,
        "public": pub,
        "key_id": kid,
        "other": other,
        "other_public": other_pub,
        "signer": load_private_key(priv),
        "other_signer": load_private_key(other),
    }


@pytest.fixture
def sign(keys: dict[str, Any]) -> Callable[..., bytes]:
    """``sign(model_bytes, version="2", **manifest)``: a signed model update built with the real code."""
    from edge.ota.manifest import build_message

    def _sign(model: bytes, version: str = "2", **kw: Any) -> bytes:
        signer = kw.pop("signer", keys["signer"])
        return build_message(model, signer, version=version, **kw)

    return _sign
