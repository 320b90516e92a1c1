"""The command registry and the built-in handlers, on a real model slot: checks, settings, audit, switches."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.agent import commands
from edge.agent.audit import AuditLog
from edge.agent.config import load_config
from edge.agent.slot import ModelSlot
from edge.inference.pipeline import Settings
from edge.ota.install import ModelStore


@pytest.fixture
def slot(coral: Path, tmp_path: Path) -> ModelSlot:
    cfg = load_config(None, flags={"model": {"path": str(coral / "keras_lstm_mnist_ptq.tflite")}}, environ={})
    s = ModelSlot(cfg.model, cfg.preprocess, Settings(), ModelStore(tmp_path / "state"))
    s.start()
    return s


def _registry(slot: ModelSlot, published: list | None = None) -> commands.CommandRegistry:
    reg = commands.CommandRegistry()
    for action, handler in commands.builtin_handlers(
        slot=slot,
        vitals=dict,
        device="dev",
        publish_bench=(published if published is not None else []).append,
    ).items():
        reg.register(action, handler)
    return reg


@pytest.mark.parametrize(
    "payload,needle",
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "JSON object"),
        (b'{"id": 1}', "no 'action'"),
        (b'{"id": 2, "action": "explode"}', "unknown action 'explode'"),
        (b'{"id": 3, "action": "set"}', "set needs"),
        (b'{"id": 4, "action": "set", "top_k": -1}', "top_k = -1: "),
        (b'{"id": 5, "action": "set", "top_k": true}', "top_k = True: "),
        (b'{"id": 6, "action": "set", "colour": "red"}', "colour = 'red': unknown key"),
        (b'{"id": 7, "action": "set", "threshold": 2}', "threshold = 2: "),
        (b'{"id": 8, "action": "set", "iou": -0.1}', "iou = -0.1: Expected `float` >= 0.0"),
        (b'{"id": 9, "action": "set", "max_detections": 0}', "max_detections = 0: Expected `int` >= 1"),
    ],
)
def test_malformed_commands_get_error_results(slot: ModelSlot, payload: bytes, needle: str) -> None:
    cid, action, ok, result, error = _registry(slot).dispatch(payload)
    assert not ok and result is None and needle in (error or ""), error
    assert slot.settings == Settings()  # nothing changed


def test_set_command_swaps_the_settings_of_the_serving_pipeline(slot: ModelSlot) -> None:
    cmd = b'{"id":"a","action":"set","top_k":3,"threshold":0.1,"max_detections":7}'
    assert _registry(slot).dispatch(cmd) == (
        "a",
        "set",
        True,
        {"top_k": 3, "threshold": 0.1, "iou": Settings().iou, "max_detections": 7},
        None,
    )
    assert slot.pipeline.settings is slot.settings and (slot.settings.top_k, slot.settings.threshold) == (
        3,
        0.1,
    )


def test_bench_command_without_edge_bench(slot: ModelSlot, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "edge.bench", None)  # a build without edge-bench
    published: list = []
    cid, action, ok, result, error = _registry(slot, published).dispatch(b'{"id":"b","action":"bench"}')
    assert (cid, ok) == ("b", False) and error and "bench not available in this build" in error
    assert published == []


def test_disabled_actions_are_refused_and_every_command_is_audited(tmp_path: Path) -> None:
    cfg = load_config(None, flags={"audit": {"publish": False}}, environ={})
    audit = AuditLog(cfg.audit, tmp_path / "audit.jsonl", "dev")
    ran: list = []
    reg = commands.CommandRegistry(audit=audit, disabled=["reboot"], topic="edge/dev/cmd")
    reg.register("reboot", lambda cmd: ran.append(cmd) or {})
    reg.register("ping", lambda cmd: {"pong": True})
    assert reg.dispatch(b'{"id":"r","action":"reboot"}')[2:] == (
        False,
        None,
        "action 'reboot' is disabled on this device (commands.disabled in the agent config)",
    )
    assert reg.dispatch(b'{"id":"p","action":"ping"}')[2] is True
    reg.dispatch(b"nope")
    assert ran == []
    assert [(r["id"], r["action"], r["outcome"], r["topic"]) for r in audit.read()] == [
        ("r", "reboot", "disabled", "edge/dev/cmd"),
        ("p", "ping", "done", "edge/dev/cmd"),
        (None, None, "malformed", "edge/dev/cmd"),
    ]
