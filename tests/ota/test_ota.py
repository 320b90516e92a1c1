"""Signed updates at the library level: keys, manifest checks, install, health check, rollback, recovery."""

from __future__ import annotations

import base64
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.digest import sha256_file
from edge.errors import EdgeError
from edge.ota.install import PAUSE_ENV, PHASES, InstalledModel, ModelStore
from edge.ota.keys import load_private_key, load_public_key
from edge.ota.manifest import MAGIC, UpdateRefusedError, frame, read_header, verify_message
from tests.support.process import run_module, subprocess_env


def _refusal(payload: bytes, keys: list[Any], **kw: Any) -> UpdateRefusedError:
    with pytest.raises(UpdateRefusedError) as err:
        verify_message(payload, keys, **kw)
    return err.value


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    r = run_module("edge.ota", "keygen", "--out", str(tmp_path / "k.key"))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert b"BEGIN PUBLIC KEY" in (tmp_path / "k.pub").read_bytes()
    assert "key id" in r.stdout
    again = run_module("edge.ota", "keygen", "--out", str(tmp_path / "k.key"))
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr
    os.chmod(tmp_path / "k.key", 0o644)
    with pytest.raises(EdgeError, match="chmod 600"):
        load_private_key(tmp_path / "k.key")


def test_good_update_verifies(coral: Path, keys: dict[str, Any], sign: Callable[..., bytes]) -> None:
    model = (coral / "keras_lstm_mnist_ptq.tflite").read_bytes()
    upd = verify_message(
        sign(model, labels=b"zero\none\n", device="dev1", cmd_id="c1"),
        [load_public_key(keys["public"])],
        device="dev1",
    )
    assert upd.model == model and upd.labels == b"zero\none\n" and upd.id == "c1"
    assert upd.manifest.key_id == keys["key_id"] and upd.manifest.version == "2"


def test_every_refusal_has_its_reason(coral: Path, keys: dict[str, Any], sign: Callable[..., bytes]) -> None:
    model = (coral / "keras_lstm_mnist_ptq.tflite").read_bytes()
    trusted = [load_public_key(keys["public"])]
    good = sign(model, device="dev1")
    header, offset = read_header(good)

    unsigned = frame({**header, "signature": None}, model)
    assert _refusal(unsigned, trusted).reason == "unsigned"

    wrong_key = sign(model, signer=keys["other_signer"])
    err = _refusal(wrong_key, trusted)
    assert err.reason == "wrong_key" and keys["key_id"] in err.what

    tampered = frame({**header, "manifest": {**header["manifest"], "version": "99"}}, model)
    assert _refusal(tampered, trusted).reason == "bad_signature"
    forged_sig = frame({**header, "signature": base64.b64encode(b"\x00" * 64).decode()}, model)
    assert _refusal(forged_sig, trusted).reason == "bad_signature"

    altered = bytearray(good)
    altered[offset + 100] ^= 0xFF
    err = _refusal(bytes(altered), trusted)
    assert err.reason == "wrong_hash" and header["manifest"]["sha256"] in err.what

    err = _refusal(good[:-10], trusted)
    assert err.reason == "truncated" and str(len(model)) in err.what
    assert _refusal(good[:10], trusted).reason == "malformed"

    err = _refusal(good, trusted, max_bytes=1000)
    assert err.reason == "oversize" and "1000-byte" in err.what
    assert _refusal(b"EDGEUPD1" + b"\xff" * 4 + b"x", trusted).reason == "malformed"
    assert _refusal(b'{"action": "model/set"}', trusted).reason == "malformed"
    assert _refusal(good, trusted, device="dev2").reason == "wrong_device"
    assert _refusal(good, []).reason == "no_key"
    assert verify_message(good, trusted, device="dev1").model == model
    assert good.startswith(MAGIC)


def _store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "state")


def test_good_install_switches_and_keeps_the_previous(
    coral: Path, tmp_path: Path, keys: dict[str, Any], sign: Callable[..., bytes]
) -> None:
    store = _store(tmp_path)
    trusted = [load_public_key(keys["public"])]
    first = coral / "keras_lstm_mnist_ptq.tflite"
    current = InstalledModel(str(first), sha256_file(first), "1")
    activated: list[InstalledModel | None] = []
    upd = verify_message(
        sign((coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes(), version="2", labels=b"a\nb\n"),
        trusted,
    )
    result = store.install(upd, current=current, activate=activated.append)
    assert result.ok, result
    assert store.active() == result.model and store.previous() == current
    assert activated == [result.model]
    assert Path(result.model.path).read_bytes() == upd.model
    assert Path(result.model.labels_path).read_text() == "a\nb\n"
    assert not store.journal_path.exists()
    # A third version: the store keeps exactly the active and the previous model.
    upd3 = verify_message(sign(first.read_bytes(), version="3"), trusted)
    assert store.install(upd3, current=store.active()).ok
    assert sorted(p.name for p in store.dir.glob("*.tflite")) == sorted(
        Path(m.path).name for m in (store.active(), store.previous())
    )
    assert store.recover() == []


@pytest.mark.parametrize("bad", ["invoking_error", "truncated"])
def test_health_check_failure_keeps_the_previous_model(
    coral: Path, tmp_path: Path, keys: dict[str, Any], sign: Callable[..., bytes], bad: str
) -> None:
    store = _store(tmp_path)
    model = (
        (coral / "model_invoking_error.tflite").read_bytes()
        if bad == "invoking_error"
        else (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()[:200_000]
    )
    upd = verify_message(sign(model, version="bad"), [load_public_key(keys["public"])])  # validly signed!
    first = coral / "keras_lstm_mnist_ptq.tflite"
    current = InstalledModel(str(first), sha256_file(first), "1")
    activated: list[Any] = []
    result = store.install(upd, current=current, activate=activated.append)
    assert not result.ok and result.reason == "health_check" and not result.rolled_back
    assert ("fake-op-double" if bad == "invoking_error" else "outside the file") in result.error
    assert "previous model" in result.error and result.fix
    assert activated == [] and store.active() is None and store.previous() is None
    assert list(store.dir.glob("*.tflite")) == [] and not store.journal_path.exists()


def test_failure_in_the_agent_rolls_back(
    coral: Path, tmp_path: Path, keys: dict[str, Any], sign: Callable[..., bytes]
) -> None:
    store = _store(tmp_path)
    trusted = [load_public_key(keys["public"])]
    v1 = store.install(
        verify_message(sign((coral / "keras_lstm_mnist_ptq.tflite").read_bytes(), version="1"), trusted),
        current=None,
    ).model
    calls: list[InstalledModel | None] = []

    def activate(m: InstalledModel | None) -> None:
        calls.append(m)
        if m is not None and m.version == "2":
            raise EdgeError("interpreter refused the model", "use another runtime")

    upd = verify_message(
        sign((coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes(), version="2"), trusted
    )
    result = store.install(upd, current=v1, activate=activate)
    assert not result.ok and result.rolled_back and result.reason == "health_check"
    assert "interpreter refused" in result.error and result.fix == "use another runtime"
    assert [c.version if c else None for c in calls] == ["2", "1"]
    assert store.active() == v1 and "rollback" in result.timings_ms
    assert Path(v1.path).exists() and not store.journal_path.exists()


_INSTALL_SCRIPT = """
import sys
from pathlib import Path
from edge.ota.install import ModelStore, InstalledModel
from edge.ota.keys import load_public_key
from edge.ota.manifest import verify_message
state, payload, pub = sys.argv[1:4]
store = ModelStore(state)
upd = verify_message(Path(payload).read_bytes(), [load_public_key(pub)])
store.install(upd, current=store.active(), activate=lambda m: None)
print("finished")
"""


def test_sigkill_at_every_phase_comes_back_on_a_valid_model(
    coral: Path, tmp_path: Path, keys: dict[str, Any], sign: Callable[..., bytes]
) -> None:
    store = _store(tmp_path)
    trusted = [load_public_key(keys["public"])]
    v1 = store.install(
        verify_message(sign((coral / "keras_lstm_mnist_ptq.tflite").read_bytes(), version="1"), trusted),
        current=None,
    ).model
    payload = tmp_path / "update.bin"
    payload.write_bytes(sign((coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes(), version="2"))
    for phase in PHASES:
        proc = subprocess.Popen(
            [sys.executable, "-c", _INSTALL_SCRIPT, str(store.dir.parent), str(payload), str(keys["public"])],
            env=subprocess_env(**{PAUSE_ENV: phase}),
        )
        marker = store.dir / f"paused-at-{phase}"
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"install never reached {phase} (rc={proc.poll()})"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        notes = ModelStore(store.dir.parent).recover()
        assert len(notes) == 1 and "interrupted" in notes[0] and "rolled back to version '1'" in notes[0], (
            phase,
            notes,
        )
        active = store.active()
        assert active == v1, (phase, active)
        assert sha256_file(active.path) == v1.sha256
        assert not store.journal_path.exists() and not list(store.dir.glob(".incoming-*"))
        assert [p.name for p in store.dir.glob("*.tflite")] == [Path(v1.path).name], phase
    # And an uninterrupted run of the same update still works afterwards.
    proc = subprocess.run(
        [sys.executable, "-c", _INSTALL_SCRIPT, str(store.dir.parent), str(payload), str(keys["public"])],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "finished" in proc.stdout, proc.stderr
    assert store.active().version == "2" and store.previous() == v1


def test_recover_repairs_a_corrupt_active_model(
    coral: Path, tmp_path: Path, keys: dict[str, Any], sign: Callable[..., bytes]
) -> None:
    store = _store(tmp_path)
    trusted = [load_public_key(keys["public"])]
    v1 = store.install(
        verify_message(sign((coral / "keras_lstm_mnist_ptq.tflite").read_bytes(), version="1"), trusted),
        current=None,
    ).model
    v2 = store.install(
        verify_message(
            sign((coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes(), version="2"), trusted
        ),
        current=v1,
    ).model
    Path(v2.path).write_bytes(b"TFL3 but not really")
    notes = store.recover()
    assert store.active() == v1 and "missing or corrupt" in notes[0]
    Path(v1.path).unlink()
    notes = store.recover()
    assert store.active() is None and "configured model" in notes[0]


def test_old_updates_sent_again_are_refused_as_replays(
    coral: Path, tmp_path: Path, keys: dict[str, Any], sign: Callable[..., bytes]
) -> None:
    store = _store(tmp_path)
    trusted = [load_public_key(keys["public"])]
    older = sign((coral / "keras_lstm_mnist_ptq.tflite").read_bytes(), version="1")
    newer = sign((coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes(), version="2")
    assert store.install(verify_message(newer, trusted), current=None).ok
    for payload in (newer, older):
        with pytest.raises(UpdateRefusedError) as err:
            store.install(verify_message(payload, trusted), current=store.active())
        assert err.value.reason == "replayed" and "signed at" in err.value.what
    assert store.active().version == "2"
    # A fresh signature of the old model is a legitimate downgrade.
    again = sign((coral / "keras_lstm_mnist_ptq.tflite").read_bytes(), version="1b")
    assert store.install(verify_message(again, trusted), current=store.active()).ok


def test_a_public_key_passed_as_the_signing_key_names_the_private_one(keys: dict[str, Any]) -> None:
    # update.pub is 0644 as keygen writes it: the advice must not be "chmod 600 update.pub"
    with pytest.raises(EdgeError) as err:
        load_private_key(keys["public"])
    assert "is a public key" in err.value.what and str(keys["private"]) in err.value.fix
    assert "chmod" not in err.value.fix


def test_push_model_bad_input_exits_2_before_connecting(
    coral: Path, keys: dict[str, Any], tmp_path: Path
) -> None:
    model = str(coral / "keras_lstm_mnist_ptq.tflite")
    base = [
        "push-model",
        "--broker",
        "mqtt://127.0.0.1:1",
        "--device-id",
        "d1",
        "--key",
        str(keys["private"]),
    ]
    cases = [
        ([str(tmp_path / "nope.tflite")], "cannot read the model file"),  # was a FileNotFoundError traceback
        (["--labels", str(tmp_path / "nope.txt"), model], "cannot read the labels file"),
        (
            ["--stage", "shadow", "--shadow-fraction", "1.5", model],
            "--shadow-fraction must be in (0, 1], got 1.5",
        ),
        (["--stage", "shadow", "--shadow-window", "0", model], "--shadow-window must be > 0 seconds"),
    ]
    for args, message in cases:
        done = run_module("edge.flash", *base, *args)
        assert done.returncode == 2 and message in done.stderr and "fix:" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_push_model_refuses_a_file_that_is_no_tflite_model_before_sending(
    coral: Path, keys: dict[str, Any], tmp_path: Path
) -> None:
    truncated = tmp_path / "m.tflite"
    truncated.write_bytes((coral / "keras_lstm_mnist_ptq.tflite").read_bytes()[:1000])
    base = [
        "push-model",
        "--broker",
        "mqtt://127.0.0.1:1",
        "--device-id",
        "d1",
        "--key",
        str(keys["private"]),
    ]
    for path, message in ((coral / "imagenet_labels.txt", "file identifier"), (truncated, "truncated")):
        done = run_module("edge.flash", *base, str(path))
        assert done.returncode == 2 and "is not a valid TFLite model" in done.stderr, done.stderr
        assert message in done.stderr and "nothing was sent" in done.stderr
