"""The agent's behaviour in-process, on the in-memory transport (edge.transport.memory).

Everything but the wire is real: the model runs in the TFLite runtime, the spool is SQLite on
disk, commands go through the registry, the model slot loads and swaps real interpreters. One
case takes milliseconds instead of a subprocess and a mosquitto; test_agent_run.py and
tests/security/test_agent_updates.py keep proving the same over the real transport.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.agent.app import Agent
from edge.agent.config import load_config
from edge.contract import messages
from edge.ota.install import InstalledModel, ModelStore, sha256_file
from edge.transport.client import Message, Will
from edge.transport.memory import MemoryBroker
from edge.transport.topics import Topics

DEV = "dev1"
T = Topics("edge", DEV)


class Observer:
    """A client of the memory broker that records everything under ``edge/#``."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.client = broker.client("observer")
        self.messages: list[Message] = []
        self.cond = threading.Condition()
        self.client.subscribe("edge/#", self._on_message)
        self.client.start()

    def _on_message(self, msg: Message) -> None:
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def json(self, topic: str) -> list[dict[str, Any]]:
        with self.cond:
            return [json.loads(m.payload) for m in self.messages if m.topic == topic]

    def wait(self, pred: Callable[[Observer], Any], what: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (value := pred(self)):
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({m.topic for m in self.messages})
                    raise AssertionError(f"timed out waiting for {what}; topics seen: {seen}")
                self.cond.wait(left)
            return value

    def send(self, leaf: str, payload: bytes | str | dict[str, Any]) -> None:
        data = json.dumps(payload) if isinstance(payload, dict) else payload
        assert self.client.publish(f"edge/{DEV}/{leaf}", data, 1) is not None

    def result(self, cid: str) -> dict[str, Any]:
        return self.wait(
            lambda o: next((r for r in o.json(T.cmd_result) if r.get("id") == cid), None),
            f"the result of command {cid}",
        )

    def predictions_for(self, names: set[str]) -> list[dict[str, Any]]:
        return self.wait(
            lambda o: (
                (got := [p for p in o.json(T.predictions) if p["source"] in names])
                and len(got) >= len(names)
                and got
            ),
            f"predictions for {sorted(names)}",
        )


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    b = MemoryBroker()
    yield b
    b.close()


@pytest.fixture
def model(tmp_path: Path, coral: Path) -> Path:
    """A private copy of the configured model: tests may break it on disk."""
    p = tmp_path / "model.tflite"
    shutil.copy(coral / "keras_lstm_mnist_ptq.tflite", p)
    return p


def _config(tmp_path: Path, model: Path, **sections: Any) -> Any:
    flags: dict[str, Any] = {
        "model": {"path": str(model)},
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"device_id": DEV},
        "source": {"spec": "mqtt"},
        "metrics": {"interval_s": 0},
        "flush_timeout_s": 5,
    }
    for k, v in sections.items():
        flags[k] = {**flags.get(k, {}), **v} if isinstance(v, dict) else v
    return load_config(None, flags=flags, environ={})


class Running:
    """``agent.run()`` on a thread, as the CLI runs it on the main thread; stopped like SIGTERM does."""

    def __init__(self, agent: Agent, observer: Observer) -> None:
        self.agent = agent
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="agent-under-test")
        self.thread.start()
        observer.wait(
            lambda o: (
                not self.thread.is_alive()
                or messages.ONLINE.encode() in [m.payload for m in o.messages if m.topic == T.availability]
            ),
            "the agent online",
        )
        if self.error is not None:  # run() failed at start: say why, not "timed out"
            raise self.error

    def _run(self) -> None:
        try:
            self.agent.run()
        except BaseException as exc:  # re-raised by stop()
            self.error = exc

    def stop(self) -> None:
        self.agent.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the agent did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def start(broker: MemoryBroker) -> Iterator[Callable[..., tuple[Agent, Observer, Running]]]:
    running: list[Running] = []

    def _start(cfg: Any) -> tuple[Agent, Observer, Running]:
        observer = Observer(broker)
        client = broker.client(
            "agent", will=Will(T.availability, messages.OFFLINE.encode(), qos=1, retain=True)
        )
        agent = Agent(cfg, client=client)
        running.append(Running(agent, observer))
        return agent, observer, running[-1]

    yield _start
    for r in running:
        if r.thread.is_alive():
            r.stop()


def test_predictions_flow_in_order_with_seq_and_are_acknowledged(
    start: Any, tmp_path: Path, model: Path, coral: Path
) -> None:
    agent, obs, run = start(_config(tmp_path, model))
    image = (coral / "mnist_nine.bmp").read_bytes()
    for i in range(5):
        obs.send(f"infer/img-{i}", image)
    preds = obs.predictions_for({f"img-{i}" for i in range(5)})
    assert [p["source"] for p in preds] == [f"img-{i}" for i in range(5)]
    assert [p["seq"] for p in preds] == [1, 2, 3, 4, 5]
    assert all(p["model_sha256"] == sha256_file(model) and p["top_k"][0]["index"] == 9 for p in preds), preds
    deadline = time.monotonic() + 10
    while agent.spool.depth() and time.monotonic() < deadline:  # every PUBACK reaches the spool
        time.sleep(0.01)
    assert agent.spool.depth() == 0 and agent.outbox.stats()["acked"] >= 5
    run.stop()
    assert obs.broker.retained[T.availability].payload == messages.OFFLINE.encode()


def test_reload_through_the_slot_keeps_serving_and_swaps(
    start: Any, tmp_path: Path, model: Path, coral: Path
) -> None:
    agent, obs, _ = start(_config(tmp_path, model))
    image = (coral / "mnist_nine.bmp").read_bytes()
    before = agent.slot.pipeline
    statuses = len(obs.json(T.status))
    obs.send("infer/before", image)
    obs.send("cmd", {"id": "r1", "action": "reload"})
    obs.send("infer/during", image)
    result = obs.result("r1")
    assert result["ok"] and result["result"]["model_sha256"] == sha256_file(model), result
    obs.send("infer/after", image)
    preds = obs.predictions_for({"before", "during", "after"})
    assert [p["seq"] for p in preds] == [1, 2, 3] and all(p["top_k"][0]["index"] == 9 for p in preds)
    assert agent.slot.pipeline is not before and agent.slot.previous is not None
    assert agent.slot.previous[0] is before  # kept for a rollback
    obs.wait(lambda o: len(o.json(T.status)) > statuses, "a status after the swap")
    agent.slot.rollback()
    assert agent.slot.pipeline is before
    obs.send("infer/rolled-back", image)
    assert obs.predictions_for({"rolled-back"})[0]["seq"] == 4


def test_a_failing_reload_keeps_the_old_model(start: Any, tmp_path: Path, model: Path, coral: Path) -> None:
    agent, obs, _ = start(_config(tmp_path, model))
    serving = agent.slot.pipeline
    shutil.copy(coral / "model_invoking_error.tflite", model)  # the file on disk no longer loads
    obs.send("cmd", {"id": "r2", "action": "reload"})
    result = obs.result("r2")
    assert not result["ok"] and "reload failed, the previous model keeps running" in result["error"], result
    assert agent.slot.pipeline is serving and agent.slot.previous is None
    obs.send("infer/still", (coral / "mnist_nine.bmp").read_bytes())
    (pred,) = obs.predictions_for({"still"})
    assert pred["top_k"][0]["index"] == 9 and pred["model_sha256"] == serving.model.sha256


def test_a_disabled_action_is_refused_and_audited(start: Any, tmp_path: Path, model: Path) -> None:
    cfg = _config(tmp_path, model, commands={"disabled": ["reload", "model/set"]})
    agent, obs, _ = start(cfg)
    serving = agent.slot.pipeline
    obs.send("cmd", {"id": "no-reload", "action": "reload"})
    result = obs.result("no-reload")
    assert not result["ok"] and "disabled" in result["error"], result
    assert agent.slot.pipeline is serving
    obs.send("model/set", b"anything")
    refused = obs.wait(
        lambda o: next((r for r in o.json(T.cmd_result) if r.get("action") == "model/set"), None),
        "the model/set refusal",
    )
    assert refused["reason"] == "disabled", refused
    obs.send("cmd", {"id": "p", "action": "ping"})
    assert obs.result("p")["ok"]
    audit = obs.wait(lambda o: len(o.json(T.audit)) >= 3 and o.json(T.audit), "three audit records")
    assert [(r["action"], r["outcome"]) for r in audit] == [
        ("reload", "disabled"),
        ("model/set", "disabled"),
        ("ping", "done"),
    ]
    on_disk = [json.loads(line) for line in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert [(r["id"], r["outcome"]) for r in on_disk] == [(r["id"], r["outcome"]) for r in audit]
    status = obs.json(T.status)[-1]
    assert status["commands_disabled"] == ["reload", "model/set"]


def test_start_up_falls_back_when_the_installed_model_is_broken(
    start: Any, tmp_path: Path, model: Path, coral: Path
) -> None:
    store = ModelStore(tmp_path / "state")
    good, broken = store.dir / "v1.tflite", store.dir / "v2-broken.tflite"
    shutil.copy(coral / "keras_lstm_mnist_ptq.tflite", good)
    shutil.copy(coral / "model_invoking_error.tflite", broken)  # sha matches: only loading it fails
    # As an update from 1 to 2 leaves the store (no public setter for "previous": install() writes it).
    store._write_pointer("previous.json", InstalledModel(str(good), sha256_file(good), "1"))  # noqa: SLF001
    store.set_active(InstalledModel(str(broken), sha256_file(broken), "2"))

    agent, obs, _ = start(_config(tmp_path, model))
    assert agent.slot.installed is not None and agent.slot.installed.version == "1"
    assert store.active() is not None and store.active().version == "1"  # type: ignore[union-attr]
    status = obs.wait(lambda o: o.json(T.status) and o.json(T.status)[-1], "a status")
    assert status["model_version"] == "1"
    assert any("'2' does not load" in n and "version '1'" in n for n in status["ota"]["recovery"]), status
    obs.send("infer/x", (coral / "mnist_nine.bmp").read_bytes())
    (pred,) = obs.predictions_for({"x"})
    assert pred["model_sha256"] == sha256_file(good)


def test_start_up_fails_when_the_configured_model_is_broken(
    broker: MemoryBroker, tmp_path: Path, coral: Path
) -> None:
    from edge.errors import EdgeError

    bad = tmp_path / "bad.tflite"
    shutil.copy(coral / "model_invoking_error.tflite", bad)
    with pytest.raises(EdgeError):
        Agent(_config(tmp_path, bad), client=broker.client("agent"))


def test_a_signed_update_goes_through_the_slot_and_is_audited(
    start: Any, tmp_path: Path, model: Path, coral: Path
) -> None:
    from edge.ota.keys import generate_keypair, load_private_key
    from edge.ota.manifest import build_message

    private, public, _ = generate_keypair(tmp_path / "keys" / "update.key")
    agent, obs, _ = start(_config(tmp_path, model, ota={"public_keys": [str(public)]}))
    configured = agent.slot.pipeline
    update = (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    labels = (coral / "imagenet_labels.txt").read_bytes()
    message = build_message(
        update, load_private_key(private), version="2", labels=labels, device=DEV, cmd_id="u1"
    )
    obs.send("model/set", message)
    result = obs.wait(
        lambda o: next((r for r in o.json(T.cmd_result) if r.get("id") == "u1"), None), "u1", 90
    )
    assert result["ok"] and result["result"]["version"] == "2", result
    assert agent.slot.installed is not None and agent.slot.installed.version == "2"
    assert agent.slot.previous is not None and agent.slot.previous[0] is configured
    status = obs.wait(
        lambda o: next((s for s in reversed(o.json(T.status)) if s.get("model_version") == "2"), None),
        "a status naming version 2",
    )
    assert status["ota"]["installed"]["version"] == "2"
    obs.send("infer/cat", (coral / "cat.bmp").read_bytes())
    (pred,) = obs.predictions_for({"cat"})
    assert pred["model_sha256"] == hashlib.sha256(update).hexdigest()
    assert any(282 <= c["index"] <= 286 for c in pred["top_k"]), pred
    audit = obs.wait(lambda o: o.json(T.audit), "the audit record")
    assert [(r["action"], r["id"], r["outcome"]) for r in audit] == [("model/set", "u1", "done")]


def test_a_request_is_answered_on_its_response_topic_with_its_correlation_data(
    start: Any, broker: MemoryBroker, tmp_path: Path, model: Path, coral: Path
) -> None:
    _, obs, _ = start(_config(tmp_path, model))
    answers: list[Message] = []
    requester = broker.client("requester")
    requester.subscribe("reply/#", answers.append)
    requester.start()
    props = {"ResponseTopic": "reply/me", "CorrelationData": b"req-42"}
    assert requester.publish(T.infer, (coral / "mnist_nine.bmp").read_bytes(), 1, False, props) is not None
    (pred,) = obs.wait(lambda o: o.json(T.predictions), "the prediction")
    deadline = time.monotonic() + 10
    while not answers and time.monotonic() < deadline:
        time.sleep(0.01)
    (answer,) = answers
    assert answer.topic == "reply/me" and answer.correlation_data == b"req-42"
    assert json.loads(answer.payload)["seq"] == pred["seq"] == 1
