"""Running the real agent: its ``run`` arguments (built here only) and agent processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import ROOT
from tests.support.broker import Mosquitto
from tests.support.process import run_module, subprocess_env


def agent_args(broker: Mosquitto | str, device: str, state: Path | str, *args: str | Path) -> list[str]:
    """``run`` and the options every agent in a test needs (broker, device id, state directory), then ``args``.

    Put in front of it whatever starts the agent: ``[python, "-m", "edge"]``, ``[python, "-c", probe]``,
    an installed ``bin/edge-agent``.
    """
    url = broker if isinstance(broker, str) else broker.url
    return ["run", "--broker", url, "--device-id", device, "--state-dir", str(state), *map(str, args)]


def agent_command(
    broker: Mosquitto | str, device: str, state: Path | str, *args: str | Path, python: str = sys.executable
) -> list[str]:
    """The command line of an agent run from this checkout (``python -m edge run ...``)."""
    return [python, "-m", "edge", *agent_args(broker, device, state, *args)]


def updatable_agent_command(
    broker: Mosquitto | str, device: str, state: Path | str, model: Path, public_key: Path, *args: str | Path
) -> list[str]:
    """An agent that takes signed model updates: ``model`` served to MQTT requests, ``public_key`` trusted,
    no metrics messages (they would interleave with the answers the update tests wait for)."""
    return agent_command(
        broker,
        device,
        state,
        "--model",
        model,
        "--source",
        "mqtt",
        "--update-key",
        public_key,
        "--metrics-interval",
        "0",
        *args,
    )


def run_agent(
    broker: Mosquitto | str,
    device: str,
    state: Path | str,
    *args: str | Path,
    timeout: float = 120,
    **kw: object,
) -> subprocess.CompletedProcess[str]:
    """Run an agent to completion (``--once`` runs) and capture its output."""
    return run_module("edge", *agent_args(broker, device, state, *args), timeout=timeout, **kw)


class AgentProcess:
    """A running agent whose output goes to ``log``."""

    def __init__(
        self, args: list[str], log: Path, python: str | None = None, env: dict[str, str] | None = None
    ):
        if python:
            args = [python, *args[1:]]
        self.log = log
        self.fh = open(log, "ab")
        self.proc = subprocess.Popen(
            args, stdout=self.fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env or subprocess_env()
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # faulthandler: stacks of every thread into the log
            time.sleep(1)
            self.proc.kill()
            raise AssertionError(f"agent did not exit within {timeout}s:\n{self.output()[-4000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self) -> int:
        self.proc.terminate()
        return self.wait(30)

    def alive(self) -> bool:
        return self.proc.poll() is None
