"""Shadow mode in-process, on the in-memory transport: real interpreters, real store, real signed messages.

tests/ota/test_shadow_agent.py proves the same through a real agent process and mosquitto.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.agent.app import Agent
from edge.agent.shadow import ShadowRunner
from edge.contract import messages, schemas
from edge.ota.keys import generate_keypair, load_private_key
from edge.ota.manifest import build_message, build_stage_message
from edge.transport.client import Will
from edge.transport.memory import MemoryBroker
from tests.agent.test_agent_inprocess import DEV, Observer, Running, T, _config


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    b = MemoryBroker()
    yield b
    b.close()


@pytest.fixture
def signer(tmp_path: Path) -> dict[str, Any]:
    private, public, _ = generate_keypair(tmp_path / "keys" / "update.key")
    other, _, _ = generate_keypair(tmp_path / "keys" / "other.key")
    return {"key": load_private_key(private), "public": public, "other": load_private_key(other)}


@pytest.fixture
def make_agent(
    broker: MemoryBroker, tmp_path: Path, coral: Path, signer: dict[str, Any]
) -> Iterator[Callable[[str], tuple[Agent, Observer]]]:
    """``make_agent(model_name)``: an agent serving that model (a private copy), trusting ``signer``."""
    running: list[Running] = []

    def make(name: str) -> tuple[Agent, Observer]:
        model = tmp_path / "model.tflite"
        model.write_bytes((coral / name).read_bytes())
        observer = Observer(broker)
        client = broker.client(
            "agent", will=Will(T.availability, messages.OFFLINE.encode(), qos=1, retain=True)
        )
        a = Agent(_config(tmp_path, model, ota={"public_keys": [str(signer["public"])]}), client=client)
        running.append(Running(a, observer))
        return a, observer

    yield make
    for run in running:
        run.stop()


@pytest.fixture
def agent(make_agent: Callable[[str], tuple[Agent, Observer]]) -> tuple[Agent, Observer]:
    return make_agent("keras_lstm_mnist_ptq.tflite")


def _send(obs: Observer, payload: bytes) -> None:
    obs.send("model/set", payload)


def _answer(obs: Observer, cid: str, timeout: float = 90) -> dict[str, Any]:
    return obs.wait(
        lambda o: next((r for r in o.json(T.cmd_result) if r.get("id") == cid), None), cid, timeout
    )


def _shadow(obs: Observer, key: Any, model: bytes, **kw: Any) -> dict[str, Any]:
    cid = uuid.uuid4().hex[:8]
    kw.setdefault("shadow_window_s", 0.5)
    _send(
        obs,
        build_message(
            model, key, version=kw.pop("version", "c1"), device=DEV, cmd_id=cid, stage="shadow", **kw
        ),
    )
    return _answer(obs, cid)


def _stage(obs: Observer, key: Any, stage: str, sha: str, size: int = 1) -> dict[str, Any]:
    cid = uuid.uuid4().hex[:8]
    _send(
        obs, build_stage_message(key, stage=stage, sha256=sha, size=size, version="x", device=DEV, cmd_id=cid)
    )
    return _answer(obs, cid)


def _infer(obs: Observer, images: list[bytes], prefix: str) -> None:
    """One input at a time, each answered before the next (a low request rate: no skip expected)."""
    for i, img in enumerate(images):
        name = f"{prefix}-{i}"
        obs.send(f"infer/{name}", img)
        obs.predictions_for({name})


def _windows(obs: Observer, sha: str, pred: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    return obs.wait(
        lambda o: next((w for w in o.json(T.shadow) if w["candidate_sha256"] == sha and pred(w)), None),
        what,
        60,
    )


def _counted(obs: Observer, sha: str, n: int) -> list[dict[str, Any]]:
    """The candidate's windows, once they account for ``n`` offered inputs (compared or skipped)."""
    return obs.wait(
        lambda o: (
            (ws := [w for w in o.json(T.shadow) if w["candidate_sha256"] == sha])
            and sum(w["inputs"] + w["skipped"] for w in ws) >= n
            and ws
        ),
        f"windows accounting for {n} inputs",
        60,
    )


def test_a_shadow_of_the_same_model_agrees_fully_and_activate_and_rollback_work(
    agent: tuple[Agent, Observer], coral: Path, signer: dict[str, Any]
) -> None:
    a, obs = agent
    key = signer["key"]
    configured = a.slot.pipeline.model
    same = configured.path.read_bytes()
    sha = hashlib.sha256(same).hexdigest()
    answer = _shadow(obs, key, same)
    assert answer["ok"] and answer["stage"] == "shadow" and answer["result"]["sha256"] == sha, answer
    assert a.slot.candidate is not None and a.slot.pipeline.model is configured  # beside, not instead
    status = obs.wait(
        lambda o: next((s for s in reversed(o.json(T.status)) if s.get("shadow")), None), "status.shadow"
    )
    assert status["shadow"]["candidate_sha256"] == sha and status["shadow"]["fraction"] == 1.0
    assert schemas.problems("status", status) == []
    nine = (coral / "mnist_nine.bmp").read_bytes()
    _infer(obs, [nine, (coral / "cat.bmp").read_bytes(), nine], "same")
    w = _windows(obs, sha, lambda w: w["inputs"] >= 1, "a shadow window with inputs")
    assert schemas.problems("shadow", w) == []
    assert w["agreement"] == 1.0 and w["metric"] == "top1" and w["task"] == "classifier", w
    assert w["active_sha256"] == sha and w["errors"] == 0
    assert w["latency_ms"]["candidate"]["p50"] is not None and w["latency_ms"]["active"]["p50"] is not None
    ws = _counted(obs, sha, 3)
    assert sum(x["inputs"] + x["skipped"] for x in ws) == 3  # every input offered exactly once
    assert all(x["agreement"] == 1.0 for x in ws if x["inputs"]), ws

    # activate the candidate that is already serving: nothing to install, the shadow ends
    done = _stage(obs, key, "activate", sha)
    assert done["ok"] and done["result"]["already_active"], done
    assert a.slot.candidate is None and a.shadow.candidate() is None

    # a different candidate, activated: installed through the store, then rolled back by naming the old sha
    mobilenet = (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    msha = hashlib.sha256(mobilenet).hexdigest()
    assert _shadow(obs, key, mobilenet, version="m2")["ok"]
    up = _stage(obs, key, "activate", msha)
    assert up["ok"] and up["stage"] == "activate" and up["result"]["sha256"] == msha, up
    assert up["result"]["previous_sha256"] == sha and up["result"]["version"] == "m2"
    assert a.slot.pipeline.model.sha256 == msha and a.store.active() is not None
    assert a.store.active().sha256 == msha and a.shadow.candidate() is None  # type: ignore[union-attr]
    assert not any(a.store.shadow_dir.iterdir())
    back = _stage(obs, key, "activate", sha)
    assert back["ok"] and back["result"]["sha256"] == sha and back["result"]["rolled_back"], back
    assert a.slot.pipeline.model.sha256 == sha
    assert a.store.previous() is not None and a.store.previous().sha256 == msha  # type: ignore[union-attr]
    obs.send("infer/after", nine)
    (pred,) = obs.predictions_for({"after"})
    assert pred["model_sha256"] == sha and pred["top_k"][0]["index"] == 9


def test_another_model_disagrees_and_drop_stops_the_windows(
    agent: tuple[Agent, Observer], coral: Path, signer: dict[str, Any]
) -> None:
    a, obs = agent
    key = signer["key"]
    other = (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    sha = hashlib.sha256(other).hexdigest()
    assert _shadow(obs, key, other)["ok"]
    images = [(coral / n).read_bytes() for n in ("mnist_nine.bmp", "cat.bmp", "hot_dog.jpg", "squat.bmp")]
    _infer(obs, images, "other")
    seen = [x for x in _counted(obs, sha, 4) if x["inputs"]]
    w = seen[-1]
    agreement = sum(x["agreement"] * x["inputs"] for x in seen) / sum(x["inputs"] for x in seen)
    assert agreement <= 0.25, seen  # an ImageNet model does not read MNIST digits
    assert w["active_sha256"] != sha and w["errors"] == 0
    # the wrong sha: refused, still shadowing
    wrong = _stage(obs, key, "drop", "0" * 64)
    assert not wrong["ok"] and wrong["reason"] == "no_candidate" and wrong["stage"] == "drop", wrong
    assert a.shadow.candidate() is not None
    # an unknown sha to activate: no_candidate, nothing changed
    unknown = _stage(obs, key, "activate", "1" * 64)
    assert not unknown["ok"] and unknown["reason"] == "no_candidate", unknown
    # a drop signed by a key the device does not trust: refused
    bad = _stage(obs, signer["other"], "drop", sha)
    assert not bad["ok"] and bad["reason"] == "wrong_key", bad
    dropped = _stage(obs, key, "drop", sha)
    assert dropped["ok"] and dropped["result"]["dropped"], dropped
    assert a.slot.candidate is None and not any(a.store.shadow_dir.iterdir())
    status = obs.wait(
        lambda o: (s := o.json(T.status)) and s[-1].get("shadow") is None and s[-1], "status without shadow"
    )
    assert status["shadow"] is None
    n = len(obs.json(T.shadow))
    _infer(obs, images[:2], "after-drop")
    time.sleep(1.2)  # two windows' time
    assert len(obs.json(T.shadow)) == n  # no window after the drop


def test_a_stage_message_cannot_be_replayed_or_carry_bytes(
    agent: tuple[Agent, Observer], coral: Path, signer: dict[str, Any]
) -> None:
    a, obs = agent
    key = signer["key"]
    model = (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    msg = build_message(model, key, version="r", device=DEV, cmd_id="s1", stage="shadow")
    _send(obs, msg)
    assert _answer(obs, "s1")["ok"]
    _send(obs, msg)  # the same signed message again
    again = obs.wait(lambda o: [r for r in o.json(T.cmd_result) if r.get("id") == "s1"][1:], "the replay")[0]
    assert not again["ok"] and again["reason"] == "replayed", again
    sha = hashlib.sha256(model).hexdigest()
    padded = (
        build_stage_message(key, stage="drop", sha256=sha, size=len(model), version="r", cmd_id="d1") + b"x"
    )
    _send(obs, padded)
    refused = _answer(obs, "d1")
    assert not refused["ok"] and refused["reason"] == "malformed" and refused["stage"] == "drop", refused
    assert a.shadow.candidate() is not None


def test_a_candidate_that_cannot_run_is_refused_and_the_active_model_serves_on(
    agent: tuple[Agent, Observer], coral: Path, signer: dict[str, Any]
) -> None:
    a, obs = agent
    before = a.slot.pipeline
    answer = _shadow(obs, signer["key"], (coral / "model_invoking_error.tflite").read_bytes())
    assert not answer["ok"] and answer["reason"] == "shadow_failed" and answer["stage"] == "shadow", answer
    assert a.slot.candidate is None and a.slot.pipeline is before and not any(a.store.shadow_dir.iterdir())
    obs.send("infer/still", (coral / "mnist_nine.bmp").read_bytes())
    (pred,) = obs.predictions_for({"still"})
    assert pred["top_k"][0]["index"] == 9


def test_a_flood_skips_shadow_inputs_but_every_prediction_arrives(
    agent: tuple[Agent, Observer], coral: Path, signer: dict[str, Any]
) -> None:
    a, obs = agent
    other = (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    sha = hashlib.sha256(other).hexdigest()
    assert _shadow(obs, signer["key"], other, shadow_window_s=1.0)["ok"]
    cand = a.slot.candidate
    assert cand is not None
    image = (coral / "cat.bmp").read_bytes()
    with cand[0].lock:  # the candidate is stuck in an invoke: the active model must not notice
        for i in range(40):
            obs.send(f"infer/flood-{i}", image)
        preds = obs.predictions_for({f"flood-{i}" for i in range(40)})
    assert len(preds) == 40
    obs.wait(
        lambda o: (
            sum(w["inputs"] + w["skipped"] for w in o.json(T.shadow) if w["candidate_sha256"] == sha) == 40
        ),
        "every flooded input counted as compared or skipped",
    )
    skipped = sum(w["skipped"] for w in obs.json(T.shadow))
    assert skipped >= 38, obs.json(T.shadow)  # one in the runner, one in the queue, the rest skipped


def test_offer_never_waits_for_a_busy_candidate(coral: Path) -> None:
    """The runner alone: with its one-slot queue full, offering returns at once and counts a skip."""

    class _Slot:
        candidate = None
        pipeline = None

    sent: list[dict[str, Any]] = []
    runner = ShadowRunner(_Slot(), DEV, sent.append)  # type: ignore[arg-type]
    from edge.agent.shadow import _Candidate

    runner._current = _Candidate(None, None, "t", 1.0, 60.0)  # type: ignore[arg-type]
    item = type("I", (), {"data": b""})()
    offering = threading.Thread(target=lambda: [runner.offer(item, None, None, None) for _ in range(1000)])  # type: ignore[arg-type]
    offering.start()
    offering.join(30)  # no runner thread takes anything: a blocking put would hang here
    assert not offering.is_alive()
    assert runner._window.skipped == 999 and runner._jobs.qsize() == 1


def test_a_failed_install_leaves_the_candidate_shadowing_and_activatable(
    agent: tuple[Agent, Observer], coral: Path, signer: dict[str, Any]
) -> None:
    a, obs = agent
    key = signer["key"]
    other = (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    sha = hashlib.sha256(other).hexdigest()
    assert _shadow(obs, key, other)["ok"]
    _send(
        obs,
        build_message((coral / "model_invoking_error.tflite").read_bytes(), key, version="bad", cmd_id="i1"),
    )
    failed = _answer(obs, "i1")
    assert not failed["ok"] and failed["stage"] == "install" and failed["reason"] == "health_check", failed
    assert a.shadow.candidate() is not None
    up = _stage(obs, key, "activate", sha)
    assert up["ok"] and a.slot.pipeline.model.sha256 == sha, up


def test_a_candidate_of_another_task_agrees_zero(
    agent: tuple[Agent, Observer], coral: Path, signer: dict[str, Any]
) -> None:
    _, obs = agent
    pose = (coral / "movenet_single_pose_lightning_ptq.tflite").read_bytes()
    sha = hashlib.sha256(pose).hexdigest()
    assert _shadow(obs, signer["key"], pose)["ok"]
    _infer(obs, [(coral / n).read_bytes() for n in ("squat.bmp", "mnist_nine.bmp")], "pose")
    w = _windows(obs, sha, lambda w: w["inputs"] >= 1, "a window of the pose candidate")
    assert w["agreement"] == 0.0 and w["task"] == "classifier" and w["errors"] == 0, w


@pytest.mark.parametrize(
    "name,image,task,metric",
    [
        ("movenet_single_pose_lightning_ptq.tflite", "squat.bmp", "pose", "keypoint_distance"),
        ("deeplabv3_mnv2_pascal_quant.tflite", "bird_segmentation.bmp", "segmentation", "segment_fractions"),
    ],
)
def test_the_same_model_agrees_fully_on_pose_and_segmentation(
    make_agent: Callable[[str], tuple[Agent, Observer]],
    coral: Path,
    signer: dict[str, Any],
    name: str,
    image: str,
    task: str,
    metric: str,
) -> None:
    a, obs = make_agent(name)
    model = (coral / name).read_bytes()
    sha = hashlib.sha256(model).hexdigest()
    assert _shadow(obs, signer["key"], model)["ok"]
    _infer(obs, [(coral / image).read_bytes()], task)
    w = _windows(obs, sha, lambda w: w["inputs"] >= 1, f"a {task} window")
    assert w["task"] == task and w["metric"] == metric and w["agreement"] == 1.0 and w["errors"] == 0, w


def test_a_refused_candidate_leaves_the_one_shadowing_in_place(
    agent: tuple[Agent, Observer], coral: Path, signer: dict[str, Any]
) -> None:
    a, obs = agent
    key = signer["key"]
    good = (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    sha = hashlib.sha256(good).hexdigest()
    assert _shadow(obs, key, good)["ok"]
    idle = _windows(obs, sha, lambda w: True, "a window without traffic")
    assert (
        idle["inputs"] == 0 and idle["agreement"] is None and idle["latency_ms"]["candidate"]["p50"] is None
    )
    assert schemas.problems("shadow", idle) == []
    bad = _shadow(obs, key, (coral / "model_invoking_error.tflite").read_bytes(), version="bad")
    assert not bad["ok"] and bad["reason"] == "shadow_failed", bad
    running = a.shadow.candidate()
    assert running is not None and running[0].sha256 == sha and Path(running[0].path).exists()
    assert _stage(obs, key, "activate", sha)["ok"] and a.slot.pipeline.model.sha256 == sha


def test_a_corrupted_but_loadable_candidate_disagrees(
    make_agent: Callable[[str], tuple[Agent, Observer]], coral: Path, signer: dict[str, Any]
) -> None:
    from tests.support.corrupt import corrupt_weights

    _, obs = make_agent("mobilenet_v1_0.25_128_quant.tflite")
    bad = corrupt_weights(coral / "mobilenet_v1_0.25_128_quant.tflite")
    sha = hashlib.sha256(bad).hexdigest()
    assert _shadow(obs, signer["key"], bad)["ok"]  # it passes the guard, loads and runs
    _infer(obs, [(coral / n).read_bytes() for n in ("cat.bmp", "hot_dog.jpg", "squat.bmp")], "bad")
    seen = [w for w in _counted(obs, sha, 3) if w["inputs"]]
    assert seen and all(w["agreement"] == 0.0 and w["errors"] == 0 for w in seen), seen
