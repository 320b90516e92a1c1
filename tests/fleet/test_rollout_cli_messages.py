"""What edge-fleet rollout tells the user when it stops: a real mosquitto and the real CLI in a subprocess,
against a device that says it is online and never answers (so nothing here needs an agent)."""

from __future__ import annotations

import fcntl
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support import samples
from tests.support.broker import Mosquitto
from tests.support.mqtt import publish
from tests.support.process import run_module, subprocess_env


def _args(mosquitto: Mosquitto, coral: Path, keys: dict[str, Any], state: Path, *extra: str) -> list[str]:
    model = coral / "mobilenet_v1_0.25_128_quant.tflite"
    return [
        "rollout", str(model), "--broker", mosquitto.url, "--key", str(keys["private"]),
        "--devices", "pi-1", "--window", "1", "--state-dir", str(state), *extra,
    ]  # fmt: skip


def _silent_device(mosquitto: Mosquitto) -> None:
    publish(
        mosquitto,
        [("edge/pi-1/availability", "online"), ("edge/pi-1/status", samples.status("pi-1"))],
        retain=True,
    )


def test_the_printed_status_command_finds_the_rollout_and_a_rolled_back_one_says_how_to_retry(
    mosquitto: Mosquitto, coral: Path, keys: dict[str, Any], tmp_path: Path
) -> None:
    _silent_device(mosquitto)
    state = tmp_path / "my rollouts"
    args = _args(mosquitto, coral, keys, state, "--ack-timeout", "0.5")
    done = run_module("edge.fleet", *args, timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr
    hint = done.stdout.strip().splitlines()[-1].split(": ", 1)[1]
    assert hint.startswith("edge-fleet status ") and "--state-dir" in hint, hint
    # the command as printed (quoted state dir) is what a shell would run: run it through one
    shown = subprocess.run(
        hint.replace("edge-fleet", f"{sys.executable} -m edge.fleet", 1),
        shell=True, capture_output=True, text=True, env=subprocess_env(), timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0 and "phase incomplete" in shown.stdout, shown.stderr

    # while another run drives it, a second one says so at once (not "resuming rollout ..." first)
    with open(next(state.glob("*.lock")), "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = run_module("edge.fleet", *args, timeout=120)
    assert second.returncode == 2 and "is being driven by another edge-fleet run" in second.stderr
    assert "resuming" not in second.stdout, second.stdout

    # a rollout that was rolled back (e.g. every device refused the key) stays so when run again, and
    # says which file to remove to try the same model again
    path = next(state.glob("*.json"))
    doc = json.loads(path.read_text())
    doc.update(phase="rolled_back", reason="pi-1 refused shadow: wrong_key: ...")
    path.write_text(json.dumps(doc))
    again = run_module("edge.fleet", *args, timeout=120)
    assert again.returncode == 3, again.stdout + again.stderr
    n, of = re.search(r"resuming rollout \w+ \(rolled_back, batch (\d+) of (\d+)\)", again.stdout).groups()
    assert int(n) <= int(of), again.stdout  # was "batch 2 of 1" once the last batch had ended
    assert f"first remove {path}" in again.stdout, again.stdout


def test_ctrl_c_says_what_stays_on_the_devices_and_how_to_resume(
    mosquitto: Mosquitto, coral: Path, keys: dict[str, Any], tmp_path: Path
) -> None:
    _silent_device(mosquitto)
    run = subprocess.Popen(
        [sys.executable, "-m", "edge.fleet", *_args(mosquitto, coral, keys, tmp_path, "--ack-timeout", "60")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not ignored as in a background job
    )
    try:
        deadline = time.monotonic() + 60
        while (
            not list(tmp_path.glob("*.json")) or "shadowing" not in next(tmp_path.glob("*.json")).read_text()
        ):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.1)
        time.sleep(0.5)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, out + err
    assert "interrupted: rollout" in out and "1 shadowing" in out, out
    assert "Run the same command again to resume" in out and "--state-dir" in out, out
