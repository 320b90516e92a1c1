"""What ``edge-fleet rollout`` refuses before it sends anything (exit 2): a file no device would take as
MODEL or --labels, and devices that shadow another rollout's candidate (its shadow would replace it).
A real mosquitto and the real CLI in a subprocess; the devices are retained messages only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edge.contract.messages import utc_iso
from edge.fleet import rollout as ro
from edge.fleet.driver import other_candidates
from tests.support import samples
from tests.support.broker import Mosquitto
from tests.support.mqtt import publish
from tests.support.process import run_module

OTHER = "ab" * 32  # another rollout's candidate


def test_a_file_no_device_would_take_is_refused_before_connecting(
    coral: Path, keys: dict[str, Any], tmp_path: Path
) -> None:
    model = coral / "mobilenet_v1_0.25_128_quant.tflite"  # 1001 classes
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(model.read_bytes()[:1000])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1") * 1001)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")

    def run(model_path: Path, *args: str) -> Any:
        base = ["rollout", str(model_path), "--broker", "mqtt://127.0.0.1:1", "--key", str(keys["private"])]
        return run_module(
            "edge.fleet", *base, "--devices", "pi-1", "--state-dir", str(tmp_path / "s"), *args, timeout=60
        )

    cases = [
        (run(coral / "imagenet_labels.txt"), ["is not a valid TFLite model", "file identifier"]),
        (run(truncated), ["is not a valid TFLite model", "truncated"]),
        (
            run(model, "--labels", str(coral / "pascal_voc_segmentation_labels.txt")),
            ["pascal_voc_segmentation_labels.txt", "names 23 of the model's 1001 classes"],
        ),
        (run(model, "--labels", str(latin1)), ["latin1.txt is not UTF-8 text"]),
        (run(model, "--labels", str(empty)), ["names no class"]),
    ]
    for done, messages in cases:
        assert done.returncode == 2, (messages, done.stdout, done.stderr)
        for message in messages:
            assert message in done.stderr and "fix:" in done.stderr, (message, done.stderr)
        assert "cannot reach the broker" not in done.stderr and "Traceback" not in done.stderr
    # the model with its own labels passes the checks: the next thing is the (unreachable) broker
    good = run(model, "--labels", str(coral / "imagenet_labels.txt"))
    assert good.returncode == 2 and "broker" in good.stderr and "TFLite" not in good.stderr, good.stderr
    # more names than classes: the agent only warns, so does the rollout
    more = run(coral / "keras_lstm_mnist_ptq.tflite", "--labels", str(coral / "imagenet_labels.txt"))
    assert "note: --labels" in more.stdout and "1001 labels, the model 10 classes" in more.stdout, more.stdout
    assert more.returncode == 2 and "broker" in more.stderr, more.stderr
    assert not list((tmp_path / "s").glob("*.json"))  # nothing planned


def _devices(mosquitto: Mosquitto, shadowing: dict[str, str | None]) -> None:
    retained: list[tuple[str, Any]] = []
    for dev, sha in shadowing.items():
        status = samples.status(dev)
        if sha is not None:
            status["shadow"] = {"candidate_sha256": sha, "version": "v2", "since": utc_iso(), "fraction": 1.0}
        retained += [(f"edge/{dev}/availability", "online"), (f"edge/{dev}/status", status)]
    publish(mosquitto, retained, retain=True)


def test_devices_shadowing_another_candidate_are_refused_unless_forced(
    mosquitto: Mosquitto, coral: Path, keys: dict[str, Any], tmp_path: Path
) -> None:
    model = coral / "mobilenet_v1_0.25_128_quant.tflite"
    ours = hashlib.sha256(model.read_bytes()).hexdigest()
    state = tmp_path / "s"
    _devices(mosquitto, {"pi-1": OTHER, "pi-2": None, "pi-3": ours})

    def run(*extra: str) -> Any:
        base = ["rollout", str(model), "--broker", mosquitto.url, "--key", str(keys["private"])]
        args = ["--devices", "pi-*", "--window", "1", "--state-dir", str(state), *extra]
        return run_module("edge.fleet", *base, *args, timeout=120)

    done = run()
    assert done.returncode == 2, done.stdout + done.stderr
    what, fix = done.stderr.split("fix:")
    assert "2 of the devices already shadow a candidate this rollout did not send" in what
    assert f"pi-1 shadow {OTHER}" in what and f"pi-3 shadow {ours} (the same model" in what, what
    assert "pi-2" not in what
    assert "--stage drop" in fix and "--force" in fix and "edge-fleet status ROLLOUT_ID" in fix, fix
    assert not list(state.glob("*.json"))  # nothing planned, nothing sent

    # the rollout that sent it has a state file here: its status command is named
    state.mkdir()
    (state / "0123456789ab.json").write_text(
        json.dumps({"rollout_id": "0123456789ab", "model_sha256": OTHER, "phase": "running"})
    )
    named = run()
    assert named.returncode == 2 and f"edge-fleet status 0123456789ab --state-dir {state}" in named.stderr

    # --force goes ahead (the silent devices never answer: incomplete) and says what it replaces
    forced = run("--force", "--ack-timeout", "0.5")
    assert forced.returncode == 4, forced.stdout + forced.stderr
    assert "note: --force: 2 of the devices already shadow" in forced.stdout, forced.stdout


def _plan(devices: list[str]) -> ro.Rollout:
    return ro.Rollout.plan(
        model_sha256="cd" * 32,
        devices={d: "ef" * 32 for d in devices},
        gates=ro.Gates(),
        canary=1,
        batch=10,
        window_s=1,
    )


def test_a_candidate_this_rollout_sent_is_its_own_on_resume() -> None:
    r = _plan(["a", "b", "c", "d"])
    ours = r.model_sha256
    # a fresh plan: any candidate is another's (the same model too: another rollout, or sent by hand)
    assert other_candidates(r, {"a": ours, "b": OTHER, "c": None}) == {"a": ours, "b": OTHER}
    # resumed: what this rollout sent is its own; a different one that arrived meanwhile is not
    r.devices["a"].state, r.devices["a"].attempts = "shadow", 1
    r.devices["b"].state, r.devices["b"].attempts = "deferred", 1
    r.devices["d"].state = "active"  # done: nothing more is sent to it
    shown = {"a": ours, "b": OTHER, "c": ours, "d": OTHER}
    assert other_candidates(r, shown) == {"b": OTHER, "c": ours}
    r.phase = "rolled_back"  # finished: a re-run sends nothing
    assert other_candidates(r, shown) == {}
