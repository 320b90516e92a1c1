"""One state directory per device id, and the one-time move out of the old shared default.

The state directory holds what must never mix between two devices: the spool (messages published
under the device's topics), sequence counters, the directory source's record of done files, the
audit log and installed models. Until 0.1 the default was ``~/.local/state/edge-agent`` for every
device id on a machine; now it is ``~/.local/state/edge-agent/<device id>`` and a ``device-id`` file
in it names its owner. An agent started on a directory owned by another device refuses to start.

The old shared directory is moved into the new one once, when it belongs to this device: its spool
and audit log name no other device (a directory with no such evidence is taken by the first device
id that starts: a single-device machine keeps its spool, counters, record and installed model).
When it names another device it is left alone, with a warning: it cannot be split safely.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

from edge.errors import EdgeError

log = logging.getLogger("edge.agent")

OWNER = "device-id"


def owner(state_dir: Path) -> str | None:
    try:
        return (state_dir / OWNER).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def devices_in(state_dir: Path, prefix: str) -> set[str]:
    """The device ids a state directory's spool and audit log mention (its evidence of ownership)."""
    found: set[str] = set()
    spool = state_dir / "spool.db"
    if spool.exists():
        try:
            con = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
            try:
                for (topic,) in con.execute("SELECT DISTINCT topic FROM messages"):
                    topic = str(topic)
                    if topic.startswith(prefix + "/"):  # <prefix>/<device>/<kind>
                        found.add(topic[len(prefix) + 1 :].split("/", 1)[0])
            finally:
                con.close()
        except sqlite3.Error:
            pass
    try:
        with open(state_dir / "audit.jsonl", encoding="utf-8") as fh:
            for line in fh:
                try:
                    device = json.loads(line).get("device")
                except (ValueError, AttributeError):
                    continue
                if isinstance(device, str):
                    found.add(device)
    except OSError:
        pass
    return found


def _legacy_entries(base: Path, device: str) -> list[Path]:
    """What the old shared default left directly in ``base`` (per-device directories excluded)."""
    out = []
    for entry in sorted(base.iterdir()):
        if entry.name == device or (entry.is_dir() and (entry / OWNER).exists()):
            continue
        out.append(entry)
    return out


def migrate_shared(base: Path, device: str, prefix: str) -> list[str]:
    """Move the old shared state in ``base`` into ``base/<device>`` if it is this device's; returns notes."""
    target = base / device
    if not base.is_dir() or owner(base) is not None or owner(target) is not None:
        return []
    entries = _legacy_entries(base, device)
    if not any(e.name in ("spool.db", "sources.db", "audit.jsonl", "models") for e in entries):
        return []
    others = devices_in(base, prefix) - {device}
    if others:
        return [
            f"the old shared state directory {base} holds messages or audit records of device(s) "
            f"{', '.join(sorted(others))}: left there (never mixed into {target}); start those device ids "
            "to move it, or remove it once their spool is empty"
        ]
    try:
        target.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            os.replace(entry, target / entry.name)
    except OSError as exc:
        raise EdgeError(
            f"cannot move the old shared state directory {base} to {target}: {exc.strerror}",
            f"move its files into {target} by hand, or set state_dir (--state-dir)",
        ) from exc
    return [f"moved the old shared state directory {base} to {target} (one state directory per device id)"]


def prepare(state_dir: Path, device: str, prefix: str, *, default_base: Path | None = None) -> list[str]:
    """Make ``state_dir`` this device's: migrate the old default, check or write its owner file.

    ``default_base`` is the base of the default (per-device) location when the config gave none.
    Raises :class:`EdgeError` when the directory belongs to another device id.
    """
    notes = migrate_shared(default_base, device, prefix) if default_base is not None else []
    current = owner(state_dir)
    if current is None and state_dir.is_dir():
        others = devices_in(state_dir, prefix) - {device}
        if others:
            current = sorted(others)[0]
    if current is not None and current != device:
        raise EdgeError(
            f"state directory {state_dir} belongs to device {current!r}, this agent is {device!r}: "
            "two devices must never share a spool, counters or done-file record",
            "give each device id its own state_dir (or leave state_dir unset: "
            "~/.local/state/edge-agent/<device id>)",
        )
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        if current is None:
            (state_dir / OWNER).write_text(device + "\n", encoding="utf-8")
    except OSError as exc:
        raise EdgeError(
            f"cannot use the state directory {state_dir}: {exc.strerror}",
            "make it writable by the agent's user, or set state_dir (--state-dir) to a writable directory",
        ) from exc
    return notes
