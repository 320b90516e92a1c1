"""Command audit log: who asked the agent to do what, and what it did.

Every command the agent receives (``cmd`` actions and ``model/set`` updates),
accepted, refused, disabled or malformed, becomes one JSON line in a local file
(the record that survives a broker outage) and one message on
``<prefix>/<device>/audit``. Payloads are never copied into the log, only their
size and sha256: a command may carry secrets, and an update carries megabytes.

Which actions the agent executes at all is configured here too
(``commands.disabled``, :class:`edge.agent.config.CommandsConfig`): a disabled action is refused and audited, nothing else.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.contract.messages import utc_iso
from edge.digest import sha256_hex

# The names of the agent's own actions (``commands.disabled`` may list these and ``model/set``).
BUILTIN_ACTIONS = ("ping", "reload", "set", "bench")

if TYPE_CHECKING:
    from edge.agent.config import AuditConfig

SCHEMA = 1
OUTCOMES = ("done", "failed", "refused", "disabled", "malformed")


def action_allowed(disabled: Sequence[str], action: str) -> bool:
    """Whether ``commands.disabled`` lets ``action`` run ('*' disables every action except ping)."""
    if action in disabled:
        return False
    return not ("*" in disabled and action != "ping")


class AuditLog:
    """Thread-safe; a failing disk or broker never makes a command fail."""

    def __init__(
        self,
        config: AuditConfig,
        path: str | Path,
        device: str,
        publish: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.path = Path(config.file).expanduser() if config.file else Path(path)
        self.device = device
        self.publish = publish if config.publish else None
        self._lock = threading.Lock()
        self.write_errors = 0
        if config.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(
        self,
        *,
        action: Any,
        cmd_id: Any,
        topic: str,
        outcome: str,
        payload: bytes = b"",
        error: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Append one record; returns it (None when auditing is disabled)."""
        if not self.config.enabled:
            return None
        assert outcome in OUTCOMES, outcome
        entry: dict[str, Any] = {
            "schema": SCHEMA,
            "device": self.device,
            "ts": utc_iso(),
            "topic": topic,
            "action": action if isinstance(action, str) else (None if action is None else repr(action)[:100]),
            "id": cmd_id if isinstance(cmd_id, str) else (None if cmd_id is None else repr(cmd_id)[:100]),
            "outcome": outcome,
            "ok": outcome == "done",
            "payload_bytes": len(payload),
            "payload_sha256": sha256_hex(payload),
        }
        if error:
            entry["error"] = error[:1000]
        if detail:
            entry["detail"] = detail
        line = json.dumps(entry, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            try:
                if self.path.exists() and self.path.stat().st_size + len(line) > self.config.max_bytes:
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line)
            except OSError:
                self.write_errors += 1
        if self.publish is not None:
            try:
                self.publish(entry)
            except Exception:
                pass  # the file holds the record; a broker hiccup must not fail the command
        return entry

    def read(self) -> list[dict[str, Any]]:
        """All records in the current file (for tests and `edge-agent audit`-style tooling)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
