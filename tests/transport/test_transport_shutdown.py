"""SIGTERM ends the agent within the flush timeout (+2 s) and says ``offline``, whatever its queues hold."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.agent import AgentProcess, agent_command
from tests.support.broker import Mosquitto
from tests.support.mqtt import Capture

FLUSH_S = 3.0
MARGIN_S = 2.0


def _agent(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, agents: Callable[..., AgentProcess], *extra: str
) -> AgentProcess:
    inbox = tmp_path / "in"
    inbox.mkdir()
    args = agent_command(
        mosquitto,
        "s1",
        tmp_path / "state",
        "--model",
        str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
        "--source",
        str(inbox),
        "--metrics-interval",
        "0",
        "--flush-timeout",
        str(FLUSH_S),
        *extra,
    )
    return agents(args, tmp_path / "agent.log")


def _sigterm_exit_s(agent: AgentProcess) -> float:
    started = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.wait(FLUSH_S + 30) == 0, agent.output()[-3000:]
    return time.monotonic() - started


def test_sigterm_with_a_full_command_queue(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, capture: Callable[..., Capture], agents
) -> None:
    sub = capture("edge/s1/availability", "edge/s1/cmd/result")
    agent = _agent(mosquitto, tmp_path, coral, agents)
    sub.wait(lambda s: "online" in s.text("edge/s1/availability"), 30, "online")
    # A long benchmark keeps the command thread busy; the commands behind it fill its bounded queue.
    sub.publish("edge/s1/cmd", json.dumps({"action": "bench", "id": "b", "min_secs": 60, "max_secs": 60}))
    time.sleep(0.5)
    for i in range(400):
        sub.client.publish("edge/s1/cmd", json.dumps({"action": "ping", "id": i}), qos=1)
    sub.wait(
        lambda s: any("too many pending" in (r.get("error") or "") for r in s.json("edge/s1/cmd/result")),
        30,
        "the queue full (a 'too many pending commands' answer)",
    )
    took = _sigterm_exit_s(agent)
    assert took < FLUSH_S + MARGIN_S, (took, agent.output()[-3000:])
    sub.wait(lambda s: s.text("edge/s1/availability")[-1:] == ["offline"], 10, "offline")
    assert not any(r.get("id") == "b" for r in sub.json("edge/s1/cmd/result")), (
        "the bench cannot have finished"
    )


def test_sigterm_with_a_frozen_broker_and_a_full_spool(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, capture: Callable[..., Capture], agents
) -> None:
    # A broker that stops answering (SIGSTOP: no TCP reset, like Wi-Fi gone) while messages wait in the
    # spool: the flush gives up at its timeout and the goodbye must not add its own long wait.
    sub = capture("edge/s1/availability")
    agent = _agent(mosquitto, tmp_path, coral, agents, "--log-level", "DEBUG")
    sub.wait(lambda s: "online" in s.text("edge/s1/availability"), 30, "online")
    assert mosquitto.proc is not None
    mosquitto.proc.send_signal(signal.SIGSTOP)
    try:
        image = (coral / "cat.bmp").read_bytes()
        for i in range(5):
            (tmp_path / "in" / f"img_{i}.bmp").write_bytes(image)
        deadline = time.monotonic() + 30
        while "-> seq 5" not in agent.output():
            assert time.monotonic() < deadline, agent.output()[-3000:]
            time.sleep(0.1)
        time.sleep(1.0)
        took = _sigterm_exit_s(agent)
        assert FLUSH_S - 0.5 < took < FLUSH_S + MARGIN_S, (took, agent.output()[-3000:])
        assert "stay in the spool" in agent.output()
    finally:
        mosquitto.proc.send_signal(signal.SIGCONT)
