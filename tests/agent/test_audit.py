"""The command audit log and per-action switches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.agent.audit import AuditConfig, AuditLog, CommandsConfig


def test_records_go_to_the_file_and_the_publisher_without_payloads(tmp_path: Path) -> None:
    published: list[dict[str, Any]] = []
    log = AuditLog(AuditConfig(), tmp_path / "audit.jsonl", "dev1", published.append)
    secret = b'{"id":"1","action":"set","password":"hunter2"}'
    log.record(action="set", cmd_id="1", topic="edge/dev1/cmd", outcome="done", payload=secret)
    log.record(
        action=["x"], cmd_id=7, topic="edge/dev1/cmd", outcome="malformed", payload=b"\xff", error="not JSON"
    )
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 2 and published == [json.loads(line) for line in lines]
    first, second = published
    assert first["ok"] and first["outcome"] == "done" and first["device"] == "dev1" and first["schema"] == 1
    assert first["payload_bytes"] == len(secret) and len(first["payload_sha256"]) == 64
    assert "hunter2" not in "".join(lines)
    assert second["action"] == "['x']" and second["id"] == "7" and second["error"] == "not JSON"


def test_rotation_disabling_and_a_failing_publisher(tmp_path: Path) -> None:
    def boom(_: dict[str, Any]) -> None:
        raise ConnectionError("broker gone")

    log = AuditLog(AuditConfig(max_bytes=4096), tmp_path / "a.jsonl", "dev1", boom)
    for i in range(40):
        assert log.record(action="ping", cmd_id=str(i), topic="t", outcome="done") is not None
    assert (tmp_path / "a.jsonl.1").exists() and (tmp_path / "a.jsonl").stat().st_size <= 4096
    assert log.read()[-1]["id"] == "39"
    off = AuditLog(AuditConfig(enabled=False), tmp_path / "off.jsonl", "dev1")
    assert off.record(action="ping", cmd_id="1", topic="t", outcome="done") is None
    assert not (tmp_path / "off.jsonl").exists()


def test_command_switches() -> None:
    assert CommandsConfig().allows("model/set")
    c = CommandsConfig(disabled=["bench", "model/set"])
    assert not c.allows("bench") and not c.allows("model/set") and c.allows("reload")
    everything = CommandsConfig(disabled=["*"])
    assert everything.allows("ping") and not everything.allows("set")
