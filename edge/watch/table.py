"""The terminal fleet table, redrawn in place with plain ANSI escapes (no curses:
it must work over a serial console and in Windows Terminal alike)."""

from __future__ import annotations

import shutil
from typing import Any, TextIO

from edge.cli import use_color

COLUMNS = (
    "DEVICE",
    "AVAIL",
    "MODEL",
    "RUNTIME/DELEGATE",
    "LAST",
    "SCORE",
    "P50 ms",
    "P99 ms",
    "INF/S",
    "SPOOL",
    "ERR",
    "SEEN",
)

_GREEN, _RED, _YELLOW, _DIM, _RESET = "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[2m", "\x1b[0m"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def rows(snapshot: dict[str, Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for d in snapshot["devices"]:
        runtime = d["runtime"] or "-"
        if d["delegate"]:
            runtime = f"{runtime}/{d['delegate']}"
        out.append(
            (
                d["device"],
                d["availability"] or "?",
                d["model"] or "-",
                runtime,
                d["summary"] if d.get("summary") is not None else "-",
                _num(d["last_score"], 3),
                _num(d["latency_p50_ms"], 2),
                _num(d["latency_p99_ms"], 2),
                _num(d["inferences_per_s"], 2),
                "-" if d["spool_depth"] is None else str(d["spool_depth"]),
                str(d["errors"]),
                _ago(d["last_seen_ago_s"]),
            )
        )
    return out


def render(
    snapshot: dict[str, Any],
    *,
    color: bool = True,
    width: int | None = None,
    broker: str = "",
    note: str = "",
) -> list[str]:
    """The table as lines (colour escapes optional), each cut to ``width``."""
    body = rows(snapshot)
    widths = [max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(COLUMNS)]

    def line(cells: tuple[str, ...], avail: str | None = None) -> str:
        text = "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
        if width:
            text = text[:width]
        if color and avail is not None:
            # colour only the AVAIL cell, after cutting, so escapes are never cut in half
            start = widths[0] + 2
            if start < len(text):
                col = {"online": _GREEN, "offline": _RED}.get(avail, _YELLOW)
                end = min(len(text), start + widths[1])
                text = text[:start] + col + text[start:end] + _RESET + text[end:]
        return text

    head = line(COLUMNS)
    lines = [f"{_DIM}{head}{_RESET}" if color else head]
    lines += [line(r, r[1]) for r in body]
    if not body:
        lines.append("(no device seen yet: waiting for messages)")
    foot = f"{snapshot['messages']} messages, {snapshot['malformed']} malformed" + (
        f" from {broker}" if broker else ""
    )
    if snapshot["recent_malformed"]:
        last = snapshot["recent_malformed"][-1]
        foot += f"; last malformed on {last['topic']}: {last['reason']}"
    if note:
        foot += f"; {note}"
    if width:
        foot = foot[:width]
    lines.append(f"{_YELLOW}{foot}{_RESET}" if color and (snapshot["malformed"] or note) else foot)
    return lines


class LiveTable:
    """Redraws the table in place: cursor up over the previous drawing, clear, draw."""

    def __init__(self, stream: TextIO, *, broker: str = "", ansi: bool | None = None) -> None:
        self.stream = stream
        self.broker = broker
        self.ansi = stream.isatty() if ansi is None else ansi  # redraw in place
        self.color = use_color(stream, tty=self.ansi)
        self._drawn = 0

    def draw(self, snapshot: dict[str, Any], note: str = "") -> None:
        width = shutil.get_terminal_size((140, 24)).columns - 1 if self.ansi else None
        lines = render(snapshot, color=self.color, width=width, broker=self.broker, note=note)
        out = []
        if self.ansi and self._drawn:
            out.append(f"\x1b[{self._drawn}F\x1b[J")
        out.append("\n".join(lines) + "\n")
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)
