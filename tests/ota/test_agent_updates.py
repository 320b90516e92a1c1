"""Signed model updates through a running agent: push, refusals, rollback, SIGKILL mid-update, audit, switches."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.digest import sha256_file
from edge.ota.install import PAUSE_ENV
from edge.ota.manifest import frame, read_header
from tests.support.agent import updatable_agent_command
from tests.support.broker import Mosquitto
from tests.support.process import run_module, subprocess_env

DEV = "sec1"
T = f"edge/{DEV}"


def _start(
    agents: Callable[..., Any],
    mosquitto: Mosquitto,
    tmp_path: Path,
    coral: Path,
    keys: dict[str, Any],
    *extra: str,
    env: dict[str, str] | None = None,
    log: str = "agent.log",
) -> Any:
    return agents(
        updatable_agent_command(
            mosquitto, DEV, tmp_path / "state", coral / "keras_lstm_mnist_ptq.tflite", keys["public"], *extra
        ),
        tmp_path / log,
        env=env,
    )


def _status(
    sub: Any, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60
) -> dict[str, Any]:
    return sub.wait(
        lambda s: next((m for m in reversed(s.json(f"{T}/status")) if pred(m)), None), timeout, what
    )


def _result(sub: Any, cmd_id: str, timeout: float = 90) -> dict[str, Any]:
    return sub.wait(
        lambda s: next((m for m in s.json(f"{T}/cmd/result") if m.get("id") == cmd_id), None),
        timeout,
        f"cmd/result {cmd_id}",
    )


def _send(sub: Any, sign: Callable[..., bytes], model: bytes, **kw: Any) -> str:
    cmd_id = uuid.uuid4().hex[:8]
    sub.publish(f"{T}/model/set", sign(model, cmd_id=cmd_id, device=DEV, **kw))
    return cmd_id


def test_push_model_installs_and_the_agent_serves_it(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, keys: dict[str, Any], capture: Any, agents: Any
) -> None:
    sub = capture(f"{T}/#")
    agent = _start(agents, mosquitto, tmp_path, coral, keys)
    lstm, mobilenet = coral / "keras_lstm_mnist_ptq.tflite", coral / "mobilenet_v1_0.25_128_quant.tflite"
    _status(sub, lambda m: m["model_sha256"] == sha256_file(lstm), "status on the configured model")
    r = run_module(
        "edge.flash",
        "push-model",
        "--broker",
        mosquitto.url,
        "--device-id",
        DEV,
        "--key",
        str(keys["private"]),
        str(mobilenet),
        "--labels",
        str(coral / "imagenet_labels.txt"),
        "--version",
        "2.0",
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    answer = json.loads(r.stdout)
    assert answer["ok"] and answer["action"] == "model/set" and answer["result"]["version"] == "2.0"
    assert answer["result"]["sha256"] == sha256_file(mobilenet) and answer["result"][
        "previous_sha256"
    ] == sha256_file(lstm)
    status = _status(sub, lambda m: m["model_sha256"] == sha256_file(mobilenet), "status on the new model")
    refused = run_module(
        "edge.flash", "push-model", "--broker", mosquitto.url, "--device-id", DEV,
        "--key", str(keys["other"]), str(lstm), timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1 and json.loads(refused.stdout)["reason"] == "wrong_key", refused.stderr
    assert "install refused (wrong_key)" in refused.stderr and "\n  fix: sign with" in refused.stderr
    assert status["model_version"] == "2.0" and status["ota"]["previous"]["sha256"] == sha256_file(lstm)
    # The new model (and its labels) really serve.
    sub.publish(f"{T}/infer/cat-1", (coral / "cat.bmp").read_bytes())
    pred = sub.wait(
        lambda s: next((p for p in s.json(f"{T}/predictions") if p["source"] == "cat-1"), None),
        60,
        "a prediction",
    )
    assert pred["model_sha256"] == sha256_file(mobilenet)
    assert any(282 <= c["index"] <= 286 and "cat" in c["label"] for c in pred["top_k"][:3]), pred
    audit = sub.wait(lambda s: [a for a in s.json(f"{T}/audit") if a["action"] == "model/set"], 30, "audit")
    assert audit[0]["outcome"] == "done" and audit[0]["detail"]["version"] == "2.0"
    assert audit[0]["payload_bytes"] > mobilenet.stat().st_size
    lines = [json.loads(x) for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert any(x["action"] == "model/set" and x["ok"] for x in lines)
    # Restarted, the agent comes back on the installed model, not the configured one.
    assert agent.terminate() == 0
    sub.messages.clear()
    _start(agents, mosquitto, tmp_path, coral, keys, log="agent2.log")
    _status(
        sub,
        lambda m: m["model_sha256"] == sha256_file(mobilenet) and m["model_version"] == "2.0",
        "status after restart",
    )


def test_every_bad_update_is_refused_with_its_reason(
    mosquitto: Mosquitto,
    tmp_path: Path,
    coral: Path,
    keys: dict[str, Any],
    sign: Callable[..., bytes],
    capture: Any,
    agents: Any,
) -> None:
    sub = capture(f"{T}/#")
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[ota]\nmax_bytes = 600000\n")
    agent = _start(agents, mosquitto, tmp_path, coral, keys, "--config", str(cfg))
    lstm = coral / "keras_lstm_mnist_ptq.tflite"
    _status(sub, lambda m: m["model_sha256"] == sha256_file(lstm), "status")
    model = (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()

    def raw(payload: bytes) -> str:
        header, _ = read_header(payload)
        return header["id"]

    good = sign(model, cmd_id="x", device=DEV)
    header, offset = read_header(good)
    cases: dict[str, bytes] = {}
    cases["unsigned"] = frame({**header, "id": "unsigned", "signature": None}, model)
    cases["wrong_key"] = sign(model, cmd_id="wrong_key", device=DEV, signer=keys["other_signer"])
    tampered = bytearray(frame({**header, "id": "wrong_hash"}, model))
    tampered[-1000] ^= 0x55
    cases["wrong_hash"] = bytes(tampered)
    cases["truncated"] = frame({**header, "id": "truncated"}, model)[:-5000]
    big = (coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite").read_bytes()
    cases["oversize"] = sign(big, cmd_id="oversize", device=DEV)
    cases["bad_signature"] = frame(
        {**header, "id": "bad_signature", "manifest": {**header["manifest"], "version": "evil"}}, model
    )
    cases["wrong_device"] = sign(model, cmd_id="wrong_device", device="another")
    for payload in cases.values():
        sub.publish(f"{T}/model/set", payload)
    for reason, payload in cases.items():
        answer = _result(sub, raw(payload))
        assert not answer["ok"] and answer["reason"] == reason, (reason, answer)
        assert answer["error"] and answer["fix"], answer
    # Garbage gets an answer too (id null), and the agent still runs the original model.
    sub.publish(f"{T}/model/set", b"\x00garbage")
    sub.wait(
        lambda s: any(m.get("reason") == "malformed" for m in s.json(f"{T}/cmd/result")), 30, "malformed"
    )
    assert agent.alive()
    sub.publish(f"{T}/infer/nine", (coral / "mnist_nine.bmp").read_bytes())
    pred = sub.wait(
        lambda s: next((p for p in s.json(f"{T}/predictions") if p["source"] == "nine"), None),
        60,
        "prediction",
    )
    assert pred["model_sha256"] == sha256_file(lstm) and pred["top_k"][0]["index"] == 9
    refused = [a for a in sub.json(f"{T}/audit") if a["action"] == "model/set"]
    assert {a["detail"]["reason"] for a in refused if "detail" in a} >= set(cases)


def test_health_check_failures_keep_the_previous_model(
    mosquitto: Mosquitto,
    tmp_path: Path,
    coral: Path,
    keys: dict[str, Any],
    sign: Callable[..., bytes],
    capture: Any,
    agents: Any,
) -> None:
    sub = capture(f"{T}/#")
    agent = _start(agents, mosquitto, tmp_path, coral, keys)
    lstm = coral / "keras_lstm_mnist_ptq.tflite"
    _status(sub, lambda m: m["model_sha256"] == sha256_file(lstm), "status")
    bad_op = _send(sub, sign, (coral / "model_invoking_error.tflite").read_bytes(), version="bad-op")
    cut = _send(
        sub, sign, (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()[:300_000], version="cut"
    )
    segv = bytearray(lstm.read_bytes())
    segv[13004] = 0  # passes every structural check, segfaults the runtime (see test_guard)
    crash = _send(sub, sign, bytes(segv), version="segv")
    for cmd_id, needle in ((bad_op, "fake-op-double"), (cut, "outside the file"), (crash, "SIGSEGV")):
        answer = _result(sub, cmd_id)
        assert not answer["ok"] and answer["reason"] == "health_check" and needle in answer["error"], answer
        assert "previous model" in answer["error"]
    assert agent.alive()
    status = _status(
        sub,
        lambda m: (m.get("ota") or {}).get("last_update", {}) and m["ota"]["last_update"].get("id") == crash,
        "status after the last refusal",
    )
    assert status["model_sha256"] == sha256_file(lstm) and status["model_version"] is None
    assert not list((tmp_path / "state" / "models").glob("*.tflite"))


def test_agent_sigkilled_mid_update_comes_back_on_a_valid_model(
    mosquitto: Mosquitto,
    tmp_path: Path,
    coral: Path,
    keys: dict[str, Any],
    sign: Callable[..., bytes],
    capture: Any,
    agents: Any,
) -> None:
    sub = capture(f"{T}/#")
    lstm, mobilenet = coral / "keras_lstm_mnist_ptq.tflite", coral / "mobilenet_v1_0.25_128_quant.tflite"
    agent = _start(agents, mosquitto, tmp_path, coral, keys, env=subprocess_env(**{PAUSE_ENV: "switched"}))
    _status(sub, lambda m: m["model_sha256"] == sha256_file(lstm), "status")
    _send(sub, sign, mobilenet.read_bytes(), version="2")
    marker = tmp_path / "state" / "models" / "paused-at-switched"
    deadline = time.monotonic() + 90
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), agent.output()[-3000:]
    # The new model is already the active pointer on disk: the worst moment to lose power.
    assert json.loads((tmp_path / "state" / "models" / "active.json").read_text())["sha256"] == sha256_file(
        mobilenet
    )
    os.kill(agent.proc.pid, signal.SIGKILL)
    agent.proc.wait()
    sub.messages.clear()
    again = _start(agents, mosquitto, tmp_path, coral, keys, log="agent2.log")
    status = _status(sub, lambda m: True, "status after restart")
    assert status["model_sha256"] == sha256_file(lstm), status
    assert any("interrupted" in n for n in status["ota"]["recovery"]), status["ota"]
    sub.publish(f"{T}/infer/nine", (coral / "mnist_nine.bmp").read_bytes())
    pred = sub.wait(
        lambda s: next((p for p in s.json(f"{T}/predictions") if p["source"] == "nine"), None),
        60,
        "prediction",
    )
    assert pred["model_sha256"] == sha256_file(lstm) and pred["top_k"][0]["index"] == 9
    # And the same update, pushed again, goes through; the very same message sent twice does not.
    message = sign(mobilenet.read_bytes(), version="2", cmd_id="again", device=DEV)
    sub.publish(f"{T}/model/set", message)
    assert _result(sub, "again")["ok"]
    sub.messages.clear()
    sub.publish(f"{T}/model/set", message)
    assert _result(sub, "again")["reason"] == "replayed"
    assert again.alive()


def test_disabled_actions_are_refused_and_audited(
    mosquitto: Mosquitto,
    tmp_path: Path,
    coral: Path,
    keys: dict[str, Any],
    sign: Callable[..., bytes],
    capture: Any,
    agents: Any,
) -> None:
    sub = capture(f"{T}/#")
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[commands]\ndisabled = ["model/set", "reload"]\n')
    _start(agents, mosquitto, tmp_path, coral, keys, "--config", str(cfg))
    _status(sub, lambda m: True, "status")
    cmd_id = _send(sub, sign, (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes())
    answer = _result(sub, cmd_id)
    assert not answer["ok"] and answer["reason"] == "disabled"
    sub.publish(f"{T}/cmd", json.dumps({"id": "r1", "action": "reload"}))
    sub.publish(f"{T}/cmd", json.dumps({"id": "p1", "action": "ping"}))
    sub.publish(f"{T}/cmd", b"{not json")
    assert "disabled" in _result(sub, "r1")["error"]
    assert _result(sub, "p1")["ok"]
    audit = sub.wait(lambda s: len(s.json(f"{T}/audit")) >= 4 and s.json(f"{T}/audit"), 30, "4 audit records")
    outcomes = {(a["action"], a["outcome"]) for a in audit}
    assert {
        ("model/set", "disabled"),
        ("reload", "disabled"),
        ("ping", "done"),
        (None, "malformed"),
    } <= outcomes


def test_fuzzed_commands_images_and_updates_never_stop_the_agent(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, keys: dict[str, Any], capture: Any, agents: Any
) -> None:
    import random

    from tests.support import fuzz

    sub = capture(f"{T}/#")
    agent = _start(agents, mosquitto, tmp_path, coral, keys)
    _status(sub, lambda m: True, "status")
    rng = random.Random(5)
    for _ in range(150):
        sub.publish(f"{T}/cmd", fuzz.mutate_command(rng))
    for _ in range(5):
        sub.publish(f"{T}/model/set", bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))))
    images = [(coral / "mnist_nine.bmp").read_bytes(), (coral / "hot_dog.jpg").read_bytes()]
    sent = {f"img-{i}": fuzz.mutate_image(rng.choice(images), rng) for i in range(30)}
    sent["bomb"] = fuzz.png_bomb()
    for name, data in sent.items():
        sub.publish(f"{T}/infer/{name}", data)
    answered = sub.wait(
        lambda s: (
            {p["source"] for p in s.json(f"{T}/predictions") + s.json(f"{T}/errors")} >= set(sent) and True
        ),
        60,
        "an answer for every image",
    )
    assert answered
    bomb = next(e for e in sub.json(f"{T}/errors") if e["source"] == "bomb")
    assert "pixels" in bomb["error"], bomb
    sub.publish(f"{T}/cmd", json.dumps({"id": "still-there", "action": "ping"}))
    assert _result(sub, "still-there")["ok"]
    assert agent.alive() and "Traceback" not in agent.output()


def test_an_installed_model_that_stopped_loading_falls_back_at_start_up(tmp_path: Path, coral: Path) -> None:
    import shutil

    from edge.agent.app import Agent
    from edge.agent.config import load_config
    from edge.ota.install import InstalledModel, ModelStore

    store = ModelStore(tmp_path / "state")
    broken = store.dir / "v9-broken.tflite"
    shutil.copy(coral / "model_invoking_error.tflite", broken)  # sha matches: only loading it fails
    store.set_active(InstalledModel(str(broken), sha256_file(broken), "9"))
    cfg = load_config(
        None,
        flags={
            "model": {"path": str(coral / "keras_lstm_mnist_ptq.tflite")},
            "state_dir": str(tmp_path / "state"),
            "mqtt": {"device_id": DEV},
        },
        environ={},
    )
    agent = Agent(cfg)
    assert agent.pipeline.model.sha256 == sha256_file(coral / "keras_lstm_mnist_ptq.tflite")
    assert store.active() is None
    assert any("'9' does not load" in n and "configured model" in n for n in agent.slot.notes)
