"""edge-fleet rollout end to end: three real edge-agent processes on a real mosquitto, under live traffic.

Each agent serves MobileNet v1 (int8) and trusts one update key; a feeder publishes real images to every
agent's ``infer`` topic all along, so the shadowed candidate runs on live inputs. The CLI is the real one,
in a subprocess; nothing here stands in for a device.

- a model of another task (the MNIST LSTM) is caught by the agreement gate on the canary: exit 3, only
  the canary ever received a model/set message, and it serves the previous model again;
- a model of the same task with a new sha256 (the same network, its file padded: what a retrained model
  that agrees looks like to the gate) is promoted batch by batch: exit 0, every status shows the new sha;
- a rollout killed mid-way finishes when the same command runs again (resumed by the rollout id);
- run on one of two bridged brokers, a rollout reaches the agent behind the bridge too.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import samples
from tests.support.agent import updatable_agent_command
from tests.support.broker import Mosquitto
from tests.support.mqtt import publish
from tests.support.process import run_module, subprocess_env

DEVICES = ("cam-1", "cam-2", "cam-3")
IMAGES = ("cat.bmp", "hot_dog.jpg", "bird_segmentation.bmp", "squat.bmp")


class Feeder:
    """Live traffic: real images to every agent's ``infer`` topic, ``rate`` a second each."""

    def __init__(self, broker: Mosquitto, images: list[bytes], rate: float = 4.0) -> None:
        self.images, self.period = images, 1.0 / rate
        self.stop = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stop.wait(self.period):
            for dev in DEVICES:
                self.client.publish(f"edge/{dev}/infer/f{n}", self.images[n % len(self.images)], qos=0)
            n += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()


def start_agents(
    agents: Any, placement: dict[str, Mosquitto], coral: Path, keys: dict[str, Any], tmp_path: Path
) -> None:
    for dev, broker in placement.items():
        agents(
            updatable_agent_command(
                broker,
                dev,
                tmp_path / f"state-{dev}",
                coral / "mobilenet_v1_0.25_128_quant.tflite",
                keys["public"],
                "--labels",
                coral / "imagenet_labels.txt",
            ),
            tmp_path / f"agent-{dev}.log",
        )


@pytest.fixture
def fleet(
    mosquitto: Mosquitto, coral: Path, keys: dict[str, Any], agents: Any, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    model = coral / "mobilenet_v1_0.25_128_quant.tflite"
    start_agents(agents, {dev: mosquitto for dev in DEVICES}, coral, keys, tmp_path)
    feeder = Feeder(mosquitto, [(coral / name).read_bytes() for name in IMAGES])
    try:
        sha = hashlib.sha256(model.read_bytes()).hexdigest()
        wait_status(mosquitto, lambda s: s.get("model_sha256") == sha, "every agent up on MobileNet")
        yield {"model": model, "sha": sha, "state": tmp_path / "rollouts"}
    finally:
        feeder.close()


def statuses(broker: Mosquitto) -> dict[str, dict[str, Any]]:
    """Every device's retained status, as edge-fleet's inventory reads it."""
    from edge.fleet.inventory import collect
    from edge.transport.url import parse_broker_url

    got = collect(parse_broker_url(broker.url), settle_s=0.3)
    return {d: dict(s.status or {}) for d, s in got.fleet.devices.items()}


def wait_status(
    broker: Mosquitto, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 90
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        st = statuses(broker)
        if set(st) >= set(DEVICES) and all(pred(st[d]) for d in DEVICES):
            return st
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {st}"
        time.sleep(0.5)


def rollout_args(broker: Mosquitto, model: Path, keys: dict[str, Any], state: Path, *extra: str) -> list[str]:
    return [
        "rollout",
        str(model),
        "--broker",
        broker.url,
        "--key",
        str(keys["private"]),
        "--devices",
        "cam-*",
        "--canary",
        "1",
        "--batch",
        "2",
        "--window",
        "4",
        "--min-inputs",
        "5",
        "--state-dir",
        str(state),
        *extra,
    ]


def test_other_task_is_rolled_back_on_the_canary_then_a_same_task_model_is_promoted(
    mosquitto: Mosquitto,
    fleet: dict[str, Any],
    coral: Path,
    keys: dict[str, Any],
    capture: Any,
    tmp_path: Path,
) -> None:
    sets = capture("edge/+/model/set")
    other = coral / "keras_lstm_mnist_ptq.tflite"
    done = run_module(
        "edge.fleet", *rollout_args(mosquitto, other, keys, fleet["state"], "--json"), timeout=300
    )
    assert done.returncode == 3, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["phase"] == "rolled_back" and "agreement" in doc["reason"], doc
    assert doc["last_verdict"]["passed"] is False and doc["last_verdict"]["figures"]["agreement"] < 0.9
    assert doc["devices_detail"]["cam-1"]["state"] == "dropped"
    assert {doc["devices_detail"][d]["state"] for d in ("cam-2", "cam-3")} == {"pending"}
    assert doc["messages"]["sent"] == {"shadow": 1, "drop": 1}
    # no device but the canary ever received the other model (or anything else)
    assert {m.topic for m in sets.messages} == {"edge/cam-1/model/set"}
    # and the canary serves the previous model again: no candidate, predictions from MobileNet
    st = wait_status(mosquitto, lambda s: s.get("shadow") is None, "the candidate dropped")
    assert {s["model_sha256"] for s in st.values()} == {fleet["sha"]}
    preds = capture("edge/cam-1/predictions")
    preds.wait(lambda s: s.json("edge/cam-1/predictions"), 30, "a prediction after the drop")
    assert {p["model_sha256"] for p in preds.json("edge/cam-1/predictions")} == {fleet["sha"]}

    # the same task, a new sha256: promoted everywhere
    same = tmp_path / "mobilenet_v1_repacked.tflite"
    same.write_bytes(fleet["model"].read_bytes() + b"\0" * 64)
    new_sha = hashlib.sha256(same.read_bytes()).hexdigest()
    done = run_module(
        "edge.fleet", *rollout_args(mosquitto, same, keys, fleet["state"], "--version", "2.0"), timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "promoted" in done.stdout and "batch 1/2" in done.stdout
    st = wait_status(mosquitto, lambda s: s.get("model_sha256") == new_sha, "the new model everywhere")
    assert {s.get("model_version") for s in st.values()} == {"2.0"}
    rid = done.stdout.strip().splitlines()[-1].split()[1].rstrip(":")
    status = run_module("edge.fleet", "status", rid, "--state-dir", str(fleet["state"]), timeout=60)
    assert status.returncode == 0 and "phase promoted" in status.stdout and "3 active" in status.stdout
    # re-running the finished rollout is idempotent: nothing is sent again
    before = len(sets.messages)
    again = run_module("edge.fleet", *rollout_args(mosquitto, same, keys, fleet["state"]), timeout=120)
    assert again.returncode == 0 and "resuming" in again.stdout
    time.sleep(1)
    assert len(sets.messages) == before


def test_a_key_the_devices_do_not_trust_stops_on_the_canary_with_the_devices_fix(
    mosquitto: Mosquitto, fleet: dict[str, Any], keys: dict[str, Any], capture: Any, tmp_path: Path
) -> None:
    sets = capture("edge/+/model/set")
    same = tmp_path / "mobilenet_v1_repacked.tflite"
    same.write_bytes(fleet["model"].read_bytes() + b"\0" * 8)
    args = rollout_args(mosquitto, same, keys, fleet["state"])
    args[args.index("--key") + 1] = str(keys["other"])
    done = run_module("edge.fleet", *args, timeout=120)
    assert done.returncode == 3, done.stdout + done.stderr
    assert (
        "cam-1 refused shadow: wrong_key" in done.stdout and "(fix: sign with the private key" in done.stdout
    )
    state = next(fleet["state"].glob("*.json"))
    assert f"first remove {state}" in done.stdout, done.stdout
    assert {m.topic for m in sets.messages} == {"edge/cam-1/model/set"}


def test_a_killed_rollout_finishes_when_the_same_command_runs_again(
    mosquitto: Mosquitto, fleet: dict[str, Any], keys: dict[str, Any], tmp_path: Path
) -> None:
    same = tmp_path / "mobilenet_v1_repacked.tflite"
    same.write_bytes(fleet["model"].read_bytes() + b"\0" * 32)
    new_sha = hashlib.sha256(same.read_bytes()).hexdigest()
    args = rollout_args(mosquitto, same, keys, fleet["state"], "--batch", "1")  # 3 batches
    first = subprocess.Popen(
        [sys.executable, "-m", "edge.fleet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(),
    )
    try:
        # kill it once the canary is promoted and the next batch has started
        deadline = time.monotonic() + 120
        while True:
            files = list(fleet["state"].glob("*.json"))
            doc = json.loads(files[0].read_text()) if files else {}
            if doc.get("batch_index", 0) >= 1:
                break
            assert first.poll() is None and time.monotonic() < deadline, doc
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert doc["phase"] == "running"
    done = run_module("edge.fleet", *args, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming rollout {doc['rollout_id']}" in done.stdout and "promoted" in done.stdout
    wait_status(mosquitto, lambda s: s.get("model_sha256") == new_sha, "the new model everywhere")


def test_bad_input_exits_2_with_a_clear_message(
    mosquitto: Mosquitto, coral: Path, keys: dict[str, Any], tmp_path: Path
) -> None:
    publish(
        mosquitto,
        [("edge/pi-1/availability", "online"), ("edge/pi-1/status", samples.status("pi-1"))],
        retain=True,
    )
    model = coral / "mobilenet_v1_0.25_128_quant.tflite"

    def run(*args: str, model_path: Path = model, key: Path = keys["private"]) -> Any:
        base = ["rollout", str(model_path), "--broker", mosquitto.url, "--key", str(key)]
        return run_module("edge.fleet", *base, "--state-dir", str(tmp_path / "s"), *args, timeout=60)

    cases = [
        (run("--devices", "pi-7"), "device 'pi-7' is not known to the broker"),
        (run("--devices", "cam-*"), "matches none of the 1 devices"),
        (run("--devices", " , "), "--devices is empty"),
        (run("--devices", "pi-1", model_path=tmp_path / "nope.tflite"), "cannot read the model"),
        (run("--devices", "pi-1", key=tmp_path / "nope.key"), "cannot read the signing key"),
        (run("--devices", "pi-1", "--canary", "0"), "--canary must be at least 1"),
        (run("--devices", "pi-1", "--window", "0"), "--window must be > 0"),
        (run("--devices", "pi-1", "--min-agreement", "1.5"), "--min-agreement must be in 0..1"),
        (run("--devices", "pi-1", "--ack-timeout", "-1"), "--ack-timeout must be > 0"),
    ]
    for done, message in cases:
        assert done.returncode == 2, (message, done.stdout, done.stderr)
        assert message in done.stderr and "fix:" in done.stderr, (message, done.stderr)
    assert not list((tmp_path / "s").glob("*.json"))  # nothing planned, nothing sent


def test_a_rollout_on_one_broker_reaches_agents_behind_a_bridge(
    bridged: tuple[Mosquitto, Mosquitto], coral: Path, keys: dict[str, Any], agents: Any, tmp_path: Path
) -> None:
    a, b = bridged
    start_agents(agents, {"cam-1": a, "cam-2": a, "cam-3": b}, coral, keys, tmp_path)
    feeder = Feeder(a, [(coral / name).read_bytes() for name in IMAGES])  # reaches cam-3 over the bridge
    try:
        old = hashlib.sha256((coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()).hexdigest()
        wait_status(a, lambda s: s.get("model_sha256") == old, "every agent up, seen from broker a")
        same = tmp_path / "mobilenet_v1_repacked.tflite"
        same.write_bytes((coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes() + b"\0" * 16)
        new = hashlib.sha256(same.read_bytes()).hexdigest()
        done = run_module(
            "edge.fleet", *rollout_args(a, same, keys, tmp_path / "rollouts", "--json"), timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
        doc = json.loads(done.stdout)
        assert doc["devices"] == {"active": 3} and doc["messages"]["answers"] == 6
        wait_status(b, lambda s: s.get("model_sha256") == new, "the new model everywhere, seen from b")
    finally:
        feeder.close()


def test_devices_that_never_answer_end_incomplete_and_a_rerun_retries_them(
    mosquitto: Mosquitto, coral: Path, keys: dict[str, Any], capture: Any, tmp_path: Path
) -> None:
    # pi-1 says it is online but nothing answers for it (a hung agent); pi-9 is offline
    publish(
        mosquitto,
        [
            ("edge/pi-1/availability", "online"),
            ("edge/pi-1/status", samples.status("pi-1")),
            ("edge/pi-9/availability", "offline"),
            ("edge/pi-9/status", samples.status("pi-9")),
        ],
        retain=True,
    )
    sets = capture("edge/+/model/set")
    args = [
        "rollout",
        str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
        "--broker",
        mosquitto.url,
        "--key",
        str(keys["private"]),
        "--devices",
        "pi-*",
        "--window",
        "1",
        "--ack-timeout",
        "1",
        "--state-dir",
        str(tmp_path / "s"),
    ]
    done = run_module("edge.fleet", *args, "--json", timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["phase"] == "incomplete" and doc["devices"] == {"offline": 2}
    assert "pi-1" in doc["reason"] and "pi-9" in doc["reason"]
    # the silent one was sent the candidate 3 times (no answer in 1 s each); the offline one nothing
    assert doc["messages"]["sent"] == {"shadow": 3}
    assert {m.topic for m in sets.messages} == {"edge/pi-1/model/set"}
    again = run_module("edge.fleet", *args, timeout=120)
    assert again.returncode == 4 and f"resuming rollout {doc['rollout_id']}" in again.stdout
    assert "run the same command again to resume" in again.stdout
