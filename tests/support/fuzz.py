"""Mutators for fuzzing the guard, the image decoder and the command parser (tests and benchmarks).

Deterministic given the ``random.Random`` passed in, so a failing mutant can be
reproduced from its seed.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from typing import Any

from edge.model import tflite_file

HUGE_DIMS = (1 << 31) - 1, 1 << 30, 1 << 24, 65536, 0, -1, -(1 << 31)


def shape_positions(data: bytes) -> list[tuple[int, int]]:
    """(byte offset, rank) of every tensor's shape vector in a well-formed model."""
    r = tflite_file._Reader(data)
    root = r.indirect(0)
    found = []
    for sg in r.tables(root, 2):
        for t in r.tables(sg, 0):
            start, rank = r.vector(t, 0, 4)
            if rank:
                found.append((start, rank))
    return found


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(0, len(data))]


def bit_flip(data: bytes, rng: random.Random, flips: int = 0) -> bytes:
    out = bytearray(data)
    for _ in range(flips or rng.randint(1, 8)):
        pos = rng.randrange(len(out))
        out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


def byte_splat(data: bytes, rng: random.Random) -> bytes:
    """Overwrite a 4-byte word with an interesting value (offsets and lengths are 32-bit)."""
    out = bytearray(data)
    pos = rng.randrange(0, max(1, len(out) - 4)) & ~3
    out[pos : pos + 4] = struct.pack("<i", rng.choice((0, -1, 1, 0x7FFFFFFF, -0x80000000, len(data), 0xFFFF)))
    return bytes(out)


def huge_dimension(data: bytes, rng: random.Random) -> bytes:
    """Set one dimension of one tensor to an absurd (or zero/negative) value."""
    positions = shape_positions(data)
    start, rank = rng.choice(positions)
    out = bytearray(data)
    struct.pack_into("<i", out, start + 4 * rng.randrange(rank), rng.choice(HUGE_DIMS))
    return bytes(out)


MODEL_MUTATORS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "truncate": truncate,
    "bit_flip": bit_flip,
    "byte_splat": byte_splat,
    "huge_dimension": huge_dimension,
}


def mutate_model(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    name = rng.choice(sorted(MODEL_MUTATORS))
    return name, MODEL_MUTATORS[name](data, rng)


def mutate_image(data: bytes, rng: random.Random) -> bytes:
    choice = rng.randrange(3)
    if choice == 0:
        return truncate(data, rng)
    if choice == 1:
        return bit_flip(data, rng, rng.randint(1, 32))
    return byte_splat(data, rng)


def png_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb's first step)."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    # One compressed row of zeros repeated: a few KB that inflate to width*height bytes (grayscale).
    raw = zlib.compress(b"\x00" * (width + 1) * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


def mutate_command(rng: random.Random) -> bytes:
    """A command that is malformed in one of many ways (for edge/<device>/cmd)."""
    actions: list[Any] = ["ping", "reload", "set", "bench", "model/set", "", "nope", None, 1, [], {}]
    base: dict[str, Any] = {"id": rng.choice(["x", "", None, 7, "é" * 300]), "action": rng.choice(actions)}
    extra: dict[str, Any] = rng.choice(
        [
            {},
            {"top_k": rng.choice([-1, 0, 3, 10**9, "3", None, 1.5])},
            {"threshold": rng.choice([float("nan"), -1, 2, "a"])},
            {"unknown": [1, 2]},
        ]
    )
    base.update(extra)
    text = json.dumps(base)
    kind = rng.randrange(6)
    if kind == 0:
        return text.encode()
    if kind == 1:
        return text[: rng.randrange(len(text))].encode()
    if kind == 2:
        return bit_flip(text.encode(), rng, rng.randint(1, 4))
    if kind == 3:
        return rng.choice([b"", b"null", b"[]", b"1e999", b"\xff\xfe", b"{" * 5000, b'"' + b"a" * 100_000])
    if kind == 4:
        return json.dumps([base]).encode()
    return bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
