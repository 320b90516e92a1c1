"""Write TOML (the standard library only reads it): enough for the agent's config."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps(data: Mapping[str, Any]) -> str:
    """Scalars first, then one ``[table]`` per nested mapping (recursively, dotted names)."""
    out: list[str] = []

    def table(d: Mapping[str, Any], path: list[str]) -> None:
        scalars = [(k, v) for k, v in d.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in d.items() if isinstance(v, Mapping)]
        if path and (scalars or not tables):
            out.append(f"\n[{'.'.join(_key(p) for p in path)}]")
        out.extend(f"{_key(str(k))} = {_value(v)}" for k, v in scalars)
        for k, v in tables:
            table(v, [*path, str(k)])

    table(data, [])
    return "\n".join(out).lstrip("\n") + "\n"
