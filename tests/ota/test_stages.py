"""The signed manifest's stage: old manifests keep verifying (and mean install), the stage is signed,
activate/drop carry no model, and the store's rollback swaps the pointers (unit level, no agent)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from edge.contract.messages import utc_iso
from edge.digest import sha256_hex
from edge.errors import EdgeError
from edge.ota.install import InstalledModel, ModelStore
from edge.ota.keys import key_id
from edge.ota.manifest import (
    UpdateRefusedError,
    build_message,
    build_stage_message,
    frame,
    read_header,
    verify_message,
)


def test_a_manifest_signed_before_stages_existed_verifies_as_an_install(keys: dict[str, Any]) -> None:
    signer = keys["signer"]
    model = b"model bytes"
    manifest = {  # what an agent before stages signed: no stage, no shadow_* keys
        "format": "edge-model-update/1",
        "version": "1",
        "sha256": sha256_hex(model),
        "size": len(model),
        "labels_sha256": None,
        "labels_size": 0,
        "device": None,
        "key_id": key_id(signer.public_key()),
        "created": utc_iso(timespec="microseconds"),
    }
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    sig = base64.b64encode(signer.sign(canonical)).decode()
    update = verify_message(
        frame({"id": "x", "manifest": manifest, "signature": sig}, model), [signer.public_key()]
    )
    assert update.manifest.stage == "install" and update.model == model
    # and an install built today is byte-for-byte that format: the new keys are left out at their defaults
    header, _ = read_header(build_message(model, signer, version="1"))
    assert set(header["manifest"]) == set(manifest)


def test_the_stage_and_shadow_settings_are_signed(keys: dict[str, Any]) -> None:
    signer = keys["signer"]
    msg = build_message(b"m", signer, version="1", stage="shadow", shadow_fraction=0.5, shadow_window_s=5)
    update = verify_message(msg, [signer.public_key()])
    assert (update.manifest.stage, update.manifest.shadow_fraction, update.manifest.shadow_window_s) == (
        "shadow",
        0.5,
        5.0,
    )
    for change in ({"stage": "install"}, {"shadow_fraction": 1.0}, {"stage": "activate"}):
        header, offset = read_header(msg)
        header["manifest"].update(change)
        with pytest.raises(UpdateRefusedError) as err:
            verify_message(frame(header, msg[offset:]), [signer.public_key()])
        assert err.value.reason in ("bad_signature", "malformed"), change
    header, offset = read_header(msg)
    header["manifest"]["stage"] = "promote"  # not a stage
    with pytest.raises(UpdateRefusedError) as err:
        verify_message(frame(header, msg[offset:]), [signer.public_key()])
    assert err.value.reason == "malformed"


def test_stage_messages_name_a_model_and_carry_none(keys: dict[str, Any]) -> None:
    signer = keys["signer"]
    msg = build_stage_message(
        signer, stage="drop", sha256="a" * 64, size=10, version="1", device="d", cmd_id="c"
    )
    update = verify_message(msg, [signer.public_key()], device="d")
    assert update.manifest.stage == "drop" and update.manifest.sha256 == "a" * 64 and update.model == b""
    with pytest.raises(UpdateRefusedError) as err:
        verify_message(msg, [signer.public_key()], device="other")
    assert err.value.reason == "wrong_device"
    with pytest.raises(UpdateRefusedError) as err:
        verify_message(msg, [keys["other_signer"].public_key()])
    assert err.value.reason == "wrong_key"
    with pytest.raises(EdgeError):
        build_stage_message(signer, stage="shadow", sha256="a" * 64, size=1, version="1")
    with pytest.raises(EdgeError):
        build_message(b"m", signer, version="1", stage="drop")
    with pytest.raises(EdgeError):
        build_message(b"m", signer, version="1", stage="shadow", shadow_fraction=0.0)


def test_the_store_rolls_back_to_the_previous_model_and_forward_again(
    tmp_path: Path, keys: dict[str, Any]
) -> None:
    from edge.model.guard import Verdict

    store = ModelStore(tmp_path, health_check=lambda *_: Verdict(True, "ok", "", "", "", 0))
    signer = keys["signer"]
    v1, v2 = b"one", b"two"
    served: list[InstalledModel | None] = []
    first = store.install(
        verify_message(build_message(v1, signer, version="1"), [signer.public_key()]), current=None
    )
    assert first.ok and first.model is not None
    second = store.install(
        verify_message(build_message(v2, signer, version="2"), [signer.public_key()]),
        current=first.model,
        activate=served.append,
    )
    assert second.ok and store.previous() == first.model
    back_msg = build_stage_message(signer, stage="activate", sha256=sha256_hex(v1), size=3, version="1")
    back = store.rollback(
        verify_message(back_msg, [signer.public_key()]).manifest, current=second.model, activate=served.append
    )
    assert back.ok and back.rolled_back and store.active() == first.model and store.previous() == second.model
    assert served[-1] == first.model and not store.journal_path.exists()
    with pytest.raises(UpdateRefusedError) as err:  # the same signed activate again
        store.rollback(verify_message(back_msg, [signer.public_key()]).manifest, current=first.model)
    assert err.value.reason == "replayed"
    fwd = build_stage_message(signer, stage="activate", sha256=sha256_hex(v2), size=3, version="2")
    assert store.rollback(verify_message(fwd, [signer.public_key()]).manifest, current=first.model).ok
    assert store.active() == second.model
    unknown = build_stage_message(signer, stage="activate", sha256="f" * 64, size=3, version="9")
    with pytest.raises(UpdateRefusedError) as err:
        store.rollback(verify_message(unknown, [signer.public_key()]).manifest, current=second.model)
    assert err.value.reason == "no_candidate"


def test_a_trust_key_removed_after_start_up_refuses_updates_as_no_key(
    tmp_path: Path, keys: dict[str, Any]
) -> None:
    """The key file is read for each update: removing it revokes trust (no_key naming the file, not
    install_failed), putting it back restores it, and one unreadable key of two leaves the other working."""
    import shutil

    from edge.agent.config import OtaConfig
    from edge.model.guard import Verdict
    from edge.ota.handler import UpdateHandler

    pub = tmp_path / "device" / "update.pub"
    pub.parent.mkdir()
    shutil.copy(keys["public"], pub)
    store = ModelStore(tmp_path / "state", health_check=lambda *_: Verdict(True, "ok", "", "", "", 0))
    handler = UpdateHandler(OtaConfig(public_keys=[str(pub)]), store, device="dev1", current=store.active)
    signer = keys["signer"]
    assert handler.handle(build_message(b"one", signer, version="1", device="dev1"))["ok"]
    pub.unlink()
    fresh = UpdateHandler(OtaConfig(public_keys=[str(pub)]), store, device="dev1", current=store.active)
    for h in (handler, fresh):  # removed after an update went through, or before the first one
        refused = h.handle(build_message(b"two", signer, version="2", device="dev1"))
        assert not refused["ok"] and refused["reason"] == "no_key", refused
        assert str(pub) in refused["error"] and "ota.public_keys[0]" in refused["error"]
        assert "edge-flash keygen" in refused["fix"]
    shutil.copy(keys["public"], pub)
    assert handler.handle(build_message(b"two", signer, version="2", device="dev1"))["ok"]
    both = UpdateHandler(
        OtaConfig(public_keys=[str(tmp_path / "gone.pub"), str(pub)]),
        store,
        device="dev1",
        current=store.active,
    )
    assert both.handle(build_message(b"three", signer, version="3", device="dev1"))["ok"]
