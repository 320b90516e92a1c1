"""The agent on a TLS broker with a password file and an ACL: connects, publishes where allowed, never shows the password."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.transport.client import Message, MqttClient, TLSOptions
from tests.support.agent import agent_command
from tests.support.process import run_module

from .tls_broker import USERS, SecureBroker, start_secure_broker

DEV = "dev1"


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureBroker]:
    b = start_secure_broker(tmp_path / "broker")
    yield b
    b.broker.stop()


class Watcher:
    def __init__(self, b: SecureBroker) -> None:
        self.messages: list[Message] = []
        self.cond = threading.Condition()
        self.client = MqttClient(
            b.url("operator", USERS["operator"]),
            "operator",
            tls=TLSOptions(ca_file=str(b.pki.ca)),
            backoff_min=0.2,
            backoff_max=0.5,
        )
        self.client.start()
        assert self.client.wait_connected(10), self.client.last_error
        self.client.subscribe("#", self._on)
        time.sleep(0.3)

    def _on(self, m: Message) -> None:
        with self.cond:
            self.messages.append(m)
            self.cond.notify_all()

    def wait_for(self, topic: str, timeout: float = 60) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not [m for m in self.messages if m.topic == topic]:
                left = deadline - time.monotonic()
                assert left > 0, f"nothing on {topic}: {[m.topic for m in self.messages]}"
                self.cond.wait(min(left, 0.2))
            return [m for m in self.messages if m.topic == topic]


def _agent_args(b: SecureBroker, tmp_path: Path, coral: Path, password: str, *extra: str) -> list[str]:
    pw = tmp_path / "mqtt-password"
    pw.write_text(password + "\n")
    pw.chmod(0o600)
    return agent_command(
        f"mqtts://localhost:{b.port}",
        DEV,
        tmp_path / "state",
        "--username",
        DEV,
        "--password-file",
        str(pw),
        "--ca-file",
        str(b.pki.ca),
        "--model",
        str(coral / "keras_lstm_mnist_ptq.tflite"),
        "--source",
        "mqtt",
        "--metrics-interval",
        "1",
        *extra,
    )


def test_agent_connects_over_tls_with_a_password_file(
    secure: SecureBroker, tmp_path: Path, coral: Path, agents: Any, keys: dict[str, Any]
) -> None:
    w = Watcher(secure)
    try:
        agent = agents(
            _agent_args(secure, tmp_path, coral, USERS[DEV], "--update-key", str(keys["public"])),
            tmp_path / "agent.log",
        )
        status = json.loads(w.wait_for(f"edge/{DEV}/status")[-1].payload)
        assert status["broker"] == f"mqtts://{DEV}:***@localhost:{secure.port}"
        assert w.wait_for(f"edge/{DEV}/availability")[-1].payload == b"online"
        w.wait_for(f"edge/{DEV}/metrics")
        w.client.publish(f"edge/{DEV}/infer/n1", (coral / "mnist_nine.bmp").read_bytes(), qos=1)
        pred = json.loads(w.wait_for(f"edge/{DEV}/predictions")[-1].payload)
        assert pred["top_k"][0]["index"] == 9
        w.client.publish(f"edge/{DEV}/cmd", json.dumps({"id": "p", "action": "ping"}), qos=1)
        assert json.loads(w.wait_for(f"edge/{DEV}/cmd/result")[-1].payload)["ok"]
        # A signed update pushed over TLS by the operator account.
        op_pw = tmp_path / "operator-password"
        op_pw.write_text(USERS["operator"])
        r = run_module(
            "edge.flash",
            "push-model",
            "--broker",
            f"mqtts://localhost:{secure.port}",
            "--device-id",
            DEV,
            "--key",
            str(keys["private"]),
            "--username",
            "operator",
            "--password-file",
            str(op_pw),
            "--ca-file",
            str(secure.pki.ca),
            "--version",
            "7",
            str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
            timeout=120,
        )
        assert r.returncode == 0 and json.loads(r.stdout)["result"]["version"] == "7", r.stdout + r.stderr
        assert USERS["operator"] not in r.stdout + r.stderr
        # One connection for the whole run: nothing it published (discovery included) broke the ACL,
        # which mosquitto punishes with a disconnect.
        assert [m.payload for m in w.messages if m.topic == f"edge/{DEV}/availability"].count(b"online") == 1
        assert agent.terminate() == 0
        # Everything the agent published stayed under its ACL'd prefix, and no secret leaked anywhere.
        assert all(m.topic.startswith(f"edge/{DEV}/") for m in w.messages), {m.topic for m in w.messages}
        everything = agent.output() + "".join(m.payload.decode(errors="replace") for m in w.messages)
        assert USERS[DEV] not in everything
    finally:
        w.client.stop()


def test_agent_with_a_wrong_password_says_why_and_never_shows_it(
    secure: SecureBroker, tmp_path: Path, coral: Path, agents: Any
) -> None:
    agent = agents(_agent_args(secure, tmp_path, coral, "wrong-horse-battery"), tmp_path / "agent.log")
    deadline = time.monotonic() + 30
    while "not authorized" not in agent.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    out = agent.output()
    assert "not authorized" in out and f"mqtts://{DEV}:***@localhost:{secure.port}" in out, out[-2000:]
    assert "wrong-horse-battery" not in out
    assert agent.alive()  # it keeps retrying with back-off, it does not crash


def test_password_from_the_environment(
    secure: SecureBroker, tmp_path: Path, coral: Path, agents: Any
) -> None:
    from tests.support.process import subprocess_env

    args = _agent_args(secure, tmp_path, coral, "unused")
    i = args.index("--password-file")
    del args[i : i + 2]
    w = Watcher(secure)
    try:
        agent = agents(args, tmp_path / "agent.log", env=subprocess_env(EDGE_MQTT_PASSWORD=USERS[DEV]))
        status = json.loads(w.wait_for(f"edge/{DEV}/status")[-1].payload)
        assert status["broker"] == f"mqtts://{DEV}:***@localhost:{secure.port}"
        assert agent.terminate() == 0 and USERS[DEV] not in agent.output()
    finally:
        w.client.stop()
