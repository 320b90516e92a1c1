"""Shadow mode through a real agent process and a real mosquitto: shadow, compare, activate, restart,
roll back, drop, and the refusals, all with signed stage messages on ``model/set``."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from edge.contract import schemas
from edge.digest import sha256_file
from edge.ota.manifest import build_message, build_stage_message, frame, read_header
from tests.support.agent import updatable_agent_command
from tests.support.broker import Mosquitto
from tests.support.process import run_module

DEV = "shadow1"
T = f"edge/{DEV}"


def _start(
    agents: Any, mosquitto: Mosquitto, tmp_path: Path, coral: Path, keys: dict[str, Any], log: str
) -> Any:
    return agents(
        updatable_agent_command(
            mosquitto, DEV, tmp_path / "state", coral / "keras_lstm_mnist_ptq.tflite", keys["public"]
        ),
        tmp_path / log,
    )


def _answer(sub: Any, cid: str) -> dict[str, Any]:
    return sub.wait(
        lambda s: next((m for m in s.json(f"{T}/cmd/result") if m.get("id") == cid), None),
        90,
        f"answer {cid}",
    )


def _shadow(sub: Any, key: Any, model: Path, version: str) -> dict[str, Any]:
    cid = uuid.uuid4().hex[:8]
    msg = build_message(
        model.read_bytes(), key, version=version, device=DEV, cmd_id=cid, stage="shadow", shadow_window_s=1.0
    )
    sub.publish(f"{T}/model/set", msg)
    return _answer(sub, cid)


def _stage(sub: Any, key: Any, stage: str, sha: str, *, unsigned: bool = False) -> dict[str, Any]:
    cid = uuid.uuid4().hex[:8]
    msg = build_stage_message(key, stage=stage, sha256=sha, size=1, version="v", device=DEV, cmd_id=cid)
    if unsigned:
        header, _ = read_header(msg)
        msg = frame({**header, "signature": None}, b"")
    sub.publish(f"{T}/model/set", msg)
    return _answer(sub, cid)


def _status(sub: Any, pred: Any, what: str) -> dict[str, Any]:
    return sub.wait(lambda s: next((m for m in reversed(s.json(f"{T}/status")) if pred(m)), None), 60, what)


def _infer(sub: Any, images: list[bytes], prefix: str) -> None:
    for i, img in enumerate(images):
        sub.publish(f"{T}/infer/{prefix}-{i}", img)
        sub.wait(
            lambda s, n=f"{prefix}-{i}": any(p["source"] == n for p in s.json(f"{T}/predictions")),
            60,
            "prediction",
        )


def _windows(sub: Any, sha: str, n: int, what: str) -> tuple[float, list[dict[str, Any]]]:
    """(input-weighted agreement, the windows) once the candidate's windows account for the ``n`` inputs
    sent (compared, or skipped because the low-priority candidate was still busy on a loaded machine)."""

    def done(s: Any) -> list[dict[str, Any]] | None:
        ws = [w for w in s.json(f"{T}/shadow") if w["candidate_sha256"] == sha]
        return ws if sum(w["inputs"] + w["skipped"] for w in ws) >= n else None

    ws = sub.wait(done, 60, what)
    for w in ws:
        assert schemas.problems("shadow", w) == [], w
    scored = [w for w in ws if w["inputs"]]
    assert scored, ws  # at least one input compared
    return sum(w["agreement"] * w["inputs"] for w in scored) / sum(w["inputs"] for w in scored), ws


def test_shadow_activate_restart_rollback_and_drop_through_a_real_agent(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, keys: dict[str, Any], capture: Any, agents: Any
) -> None:
    sub = capture(f"{T}/#")
    key = keys["signer"]
    lstm, mobilenet = coral / "keras_lstm_mnist_ptq.tflite", coral / "mobilenet_v1_0.25_128_quant.tflite"
    lsha, msha = sha256_file(lstm), sha256_file(mobilenet)
    agent = _start(agents, mosquitto, tmp_path, coral, keys, "agent.log")
    _status(sub, lambda m: m["model_sha256"] == lsha and m["shadow"] is None, "status, no shadow")
    images = [(coral / n).read_bytes() for n in ("mnist_nine.bmp", "cat.bmp", "hot_dog.jpg")]

    # the same model as a candidate: full agreement
    same = _shadow(sub, key, lstm, "same")
    assert same["ok"] and same["stage"] == "shadow" and same["result"]["sha256"] == lsha, same
    _infer(sub, images, "a")
    agreement, ws = _windows(sub, lsha, 3, "windows of the same model")
    assert agreement == 1.0 and all(w["metric"] == "top1" and w["errors"] == 0 for w in ws), ws

    # another model replaces it as the candidate: low agreement
    other = _shadow(sub, key, mobilenet, "m2")
    assert other["ok"] and other["result"]["replaced_sha256"] == lsha, other
    _infer(sub, images, "b")
    agreement, ws = _windows(sub, msha, 3, "windows of another model")
    assert agreement <= 0.34 and all(w["active_sha256"] == lsha for w in ws), ws

    # refusals change nothing
    assert _stage(sub, key, "activate", "2" * 64)["reason"] == "no_candidate"
    assert _stage(sub, keys["other_signer"], "activate", msha)["reason"] == "wrong_key"
    assert _stage(sub, key, "activate", msha, unsigned=True)["reason"] == "unsigned"

    # activate: the candidate serves, through the store (a restart keeps it)
    up = _stage(sub, key, "activate", msha)
    assert up["ok"] and up["result"]["sha256"] == msha and up["result"]["previous_sha256"] == lsha, up
    status = _status(sub, lambda m: m["model_sha256"] == msha, "status on the activated model")
    assert status["shadow"] is None and status["model_version"] == "m2"
    assert agent.terminate() == 0
    sub.messages.clear()
    agent = _start(agents, mosquitto, tmp_path, coral, keys, "agent2.log")
    status = _status(sub, lambda m: m["model_sha256"] == msha, "status after the restart")
    assert status["shadow"] is None and status["ota"]["previous"]["sha256"] == lsha

    # activate the previous sha: a rollback
    back = _stage(sub, key, "activate", lsha)
    assert back["ok"] and back["result"]["rolled_back"] and back["result"]["sha256"] == lsha, back
    _status(sub, lambda m: m["model_sha256"] == lsha, "status after the rollback")
    sub.publish(f"{T}/infer/c", images[0])
    pred = sub.wait(
        lambda s: next((p for p in s.json(f"{T}/predictions") if p["source"] == "c"), None), 60, "prediction"
    )
    assert pred["model_sha256"] == lsha and pred["top_k"][0]["index"] == 9

    # shadow again, then drop, with edge-flash push-model --stage: no more windows
    for stage in ("shadow", "drop"):
        r = run_module(
            "edge.flash",
            "push-model",
            "--broker",
            mosquitto.url,
            "--device-id",
            DEV,
            "--key",
            str(keys["private"]),
            "--stage",
            stage,
            "--shadow-window",
            "1",
            str(mobilenet),
            timeout=120,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        answer = json.loads(r.stdout)
        assert answer["ok"] and answer["stage"] == stage and answer["result"]["sha256"] == msha, answer
    _status(sub, lambda m: m["shadow"] is None and m["model_sha256"] == lsha, "status after the drop")
    n = len(sub.json(f"{T}/shadow"))
    _infer(sub, images[:2], "d")
    time.sleep(1.5)  # longer than a window
    sub.publish(f"{T}/cmd", '{"id": "p", "action": "ping"}')  # a round trip: anything queued is out by now
    sub.wait(lambda s: any(r.get("id") == "p" for r in s.json(f"{T}/cmd/result")), 30, "ping")
    assert len(sub.json(f"{T}/shadow")) == n
    assert agent.terminate() == 0
