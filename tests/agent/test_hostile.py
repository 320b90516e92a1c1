"""Hostile payloads against a real agent and a real mosquitto: every thread survives any byte sequence.

After each kind of attack the agent must still answer ``ping`` (the command thread lives), and at the
end a signed update must still install (the OTA thread lives) and an image must still be predicted
(the inference path lives). Each refusal is checked for the reason the sender is told.
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.ota.manifest import MAGIC
from tests.support.agent import updatable_agent_command

DEV = "hostile1"
T = f"edge/{DEV}"


def _result(sub: Any, cmd_id: Any, timeout: float = 60) -> dict[str, Any]:
    return sub.wait(
        lambda s: next((m for m in s.json(f"{T}/cmd/result") if m.get("id") == cmd_id), None),
        timeout,
        f"cmd/result {cmd_id}",
    )


def _ping(sub: Any) -> None:
    cid = uuid.uuid4().hex[:8]
    sub.publish(f"{T}/cmd", json.dumps({"id": cid, "action": "ping"}))
    assert _result(sub, cid)["ok"] is True


def _results_without_id(sub: Any) -> list[dict[str, Any]]:
    return [m for m in sub.json(f"{T}/cmd/result") if m.get("id") is None]


@pytest.fixture
def hostile_agent(
    agents: Callable[..., Any], mosquitto: Any, capture: Any, tmp_path: Path, coral: Path, keys: Any
) -> tuple[Any, Any]:
    sub = capture(f"{T}/#")
    agent = agents(
        updatable_agent_command(
            mosquitto, DEV, tmp_path / "state", coral / "mobilenet_v1_0.25_128_quant.tflite", keys["public"]
        ),
        tmp_path / "agent.log",
    )
    sub.wait(lambda s: s.on(f"{T}/status"), 60, "status")
    return agent, sub


DEEP = b"[" * 5000 + b"]" * 5000
COMMANDS = {
    "deep nesting": b'{"id": "deep", "action": "ping", "x": ' + DEEP + b"}",
    "deep top level": DEEP,
    "huge integer": b'{"id": "bigint", "action": "set", "top_k": ' + b"9" * 5000 + b"}",
    "NaN id": b'{"id": NaN, "action": "ping"}',
    "infinite number": b'{"id": "inf", "action": "set", "threshold": 1e999}',
    "not UTF-8": b'{"id": "\xff\xfe", "action": "ping"}',
    "oversize": b'{"id": "big", "action": "ping", "pad": "' + b"a" * 100_000 + b'"}',
    "not an object": b"[1, 2, 3]",
    "empty": b"",
    "binary": bytes(range(256)) * 4,
}


def test_hostile_commands_leave_the_command_thread_alive(hostile_agent: Any) -> None:
    _agent, sub = hostile_agent
    for name, payload in COMMANDS.items():
        before = len(sub.on(f"{T}/cmd/result"))
        sub.publish(f"{T}/cmd", payload)
        sub.wait(lambda s, n=before: len(s.on(f"{T}/cmd/result")) > n, 30, f"an answer to {name}")
        answer = sub.json(f"{T}/cmd/result")[-1]
        assert answer["ok"] is False and answer["error"], (name, answer)
        _ping(sub)
    errors = " | ".join(m["error"] for m in _results_without_id(sub))
    assert "nests" in errors and "bytes, more than" in errors and "not valid JSON" in errors, errors


def test_a_flood_of_commands_is_refused_not_queued_forever(hostile_agent: Any) -> None:
    agent, sub = hostile_agent
    for i in range(1500):
        sub.client.publish(f"{T}/cmd", json.dumps({"id": f"f{i}", "action": "ping"}), qos=0)
    answers = sub.wait(lambda s: len(s.json(f"{T}/cmd/result")) >= 1500 and s.json(f"{T}/cmd/result"), 120)
    refused = [a for a in answers if not a["ok"]]
    # Whatever could not be queued is refused at once, by id, so the sender knows what to send again.
    assert all(a["error"] == "too many pending commands; retry later" and a["id"] for a in refused)
    assert len({a["id"] for a in answers}) == 1500
    _ping(sub)
    assert agent.terminate() == 0  # and SIGTERM does not hang after a full queue


def _frame(header: bytes, declared: int | None = None) -> bytes:
    return MAGIC + struct.pack(">I", len(header) if declared is None else declared) + header


UPDATES = {
    "deep header": _frame(b'{"id": "u1", "manifest": ' + DEEP + b"}"),
    "header over 32 levels": _frame(b'{"id": "u2", "m": ' + b"[" * 40 + b"]" * 40 + b"}"),
    "huge integer in header": _frame(b'{"id": "u3", "n": ' + b"7" * 5000 + b"}"),
    "header length past the end": _frame(b'{"id": "u4"}', declared=10_000),
    "not a frame": b"GET / HTTP/1.1\r\n\r\n",
    "truncated": MAGIC + b"\x00\x00",
    "header not UTF-8": _frame(b'{"id": "\xff"}'),
}


def test_hostile_updates_leave_the_update_thread_alive(
    hostile_agent: Any, sign: Callable[..., bytes], coral: Path
) -> None:
    _agent, sub = hostile_agent
    for name, payload in UPDATES.items():
        before = len(sub.on(f"{T}/cmd/result"))
        sub.publish(f"{T}/model/set", payload)
        sub.wait(lambda s, n=before: len(s.on(f"{T}/cmd/result")) > n, 30, f"an answer to {name}")
        answer = sub.json(f"{T}/cmd/result")[-1]
        assert answer["ok"] is False and answer["reason"] == "malformed", (name, answer)
        _ping(sub)
    # The OTA thread still installs a real signed update after all of that.
    cid = uuid.uuid4().hex[:8]
    model = (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    sub.publish(f"{T}/model/set", sign(model, cmd_id=cid, device=DEV))
    assert _result(sub, cid, 120)["ok"] is True


def test_oversize_and_garbage_requests_are_refused_and_predictions_go_on(
    hostile_agent: Any, coral: Path
) -> None:
    _agent, sub = hostile_agent
    sub.publish(f"{T}/infer/too-big", b"\xff\xd8\xff" + b"\0" * (17 * 1024 * 1024))
    sub.publish(f"{T}/infer/garbage", bytes(range(256)) * 64)
    sub.publish(f"{T}/infer/cat", (coral / "cat.bmp").read_bytes())
    sub.wait(lambda s: s.on(f"{T}/predictions"), 60, "a prediction after the bad requests")
    pred = sub.json(f"{T}/predictions")[-1]
    assert pred["source"] == "cat" and pred["top_k"][0]["score"] > 0
    errors = {
        e["source"]: e
        for e in sub.wait(lambda s: len(s.json(f"{T}/errors")) >= 2 and s.json(f"{T}/errors"), 30)
    }
    assert "over the" in errors["too-big"]["error"] and "max_request_bytes" in errors["too-big"]["fix"]
    assert "garbage" in errors
    _ping(sub)
