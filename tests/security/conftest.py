"""Fixtures for the security tests: signing keys and signed updates built with the real code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.ota.keys import generate_keypair, load_private_key


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    """A trusted key pair and an untrusted one."""
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
    from edge.ota.manifest import build_message

    def _sign(model: bytes, version: str = "2", **kw: Any) -> bytes:
        signer = kw.pop("signer", keys["signer"])
        return build_message(model, signer, version=version, **kw)

    return _sign


# The agent tests' helpers (a subscriber that survives restarts, agent processes) serve here too.
from tests.agent.conftest import agents, subscriber  # noqa: E402,F401
