"""JSON that arrives from the network, parsed within limits: any byte sequence gives a value or a PayloadError.

Every thread that reads network input (commands, ``model/set`` headers, request
metadata) parses through :func:`loads`, so a hostile message costs a bounded
amount of memory and CPU and can never raise anything its caller does not expect
(``json.loads`` raises RecursionError on deep nesting and ValueError on integers
of over 4,300 digits, which once killed the command thread).
"""

from __future__ import annotations

from typing import Any

import msgspec

from edge.errors import EdgeError

MAX_DEPTH = 32  # no message of the contract nests deeper than a handful of levels
_decoder = msgspec.json.Decoder()


class PayloadError(EdgeError):
    """A network payload that is not what the contract allows (the message says what and why)."""


def loads(
    data: bytes | bytearray | memoryview, *, what: str, max_bytes: int, max_depth: int = MAX_DEPTH
) -> Any:
    """Parse one JSON document of at most ``max_bytes`` bytes and ``max_depth`` nesting levels.

    Integers must fit in 64 bits and numbers must be finite (JSON has no NaN); anything else
    raises :class:`PayloadError` naming ``what`` was refused, never another exception.
    """
    if len(data) > max_bytes:
        raise PayloadError(
            f"{what} is {len(data)} bytes, more than the {max_bytes} allowed", "send a smaller message"
        )
    try:
        value = _decoder.decode(data)
    except RecursionError:
        raise PayloadError(f"{what} nests too deeply", f"keep JSON within {max_depth} levels") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        # ValidationError here means a number out of range (an integer beyond 64 bits, 1e999)
        raise PayloadError(
            f"{what} is not valid JSON: {exc}", "send UTF-8 JSON with finite numbers"
        ) from None
    if _depth(value, max_depth) > max_depth:
        raise PayloadError(
            f"{what} nests more than {max_depth} levels", f"keep JSON within {max_depth} levels"
        )
    return value


def _depth(value: Any, limit: int) -> int:
    """Nesting depth, iteratively (no recursion to exhaust), stopping once past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        elif not isinstance(v, list):
            continue
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        stack.extend((x, d + 1) for x in v)
    return deepest
