"""SHA-256 digests as the toolkit writes them everywhere (model status, manifests, audit): lowercase hex."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO

_BLOCK = 1 << 20  # models and bundles are read in 1 MiB blocks, never held twice in memory


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_stream(f: IO[bytes]) -> tuple[str, int]:
    """Hex digest and size of what is left to read in ``f``."""
    h = hashlib.sha256()
    n = 0
    for block in iter(lambda: f.read(_BLOCK), b""):
        h.update(block)
        n += len(block)
    return h.hexdigest(), n


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)[0]
