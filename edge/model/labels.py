"""Class labels: one label a line (line N = class N), or ``N label`` lines."""

from __future__ import annotations

import re
from pathlib import Path

from edge.errors import InputError

_NUMBERED = re.compile(r"^\s*(\d+)[\s:,]+(.+?)\s*$")


def parse_labels(text: str) -> dict[int, str]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines and all(_NUMBERED.match(ln) for ln in lines):
        return {int(m.group(1)): m.group(2) for m in (_NUMBERED.match(ln) for ln in lines) if m}
    return {i: ln.strip() for i, ln in enumerate(text.splitlines()) if ln.strip()}


def read_labels(path: str | Path | None) -> dict[int, str]:
    if path is None:
        return {}
    p = Path(path)
    try:
        return parse_labels(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(
            f"labels file not found: {p}", "pass --labels with a text file, one label a line"
        ) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"labels file is not UTF-8 text: {p}", "pass a text file, one label a line") from exc
