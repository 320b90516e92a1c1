"""The rollout driver's pieces without a broker: device selection, summed shadow windows, signed actions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge.errors import EdgeError
from edge.fleet.driver import Accumulated, Signer, cmd_id, parse_cmd_id, resolve_devices
from edge.fleet.inventory import Collected
from edge.fleet.rollout import Action, DeviceRecord, ShadowReport
from edge.ota.manifest import UpdateRefusedError, verify_message
from edge.watch.state import Fleet
from tests.support import samples


def inventory() -> Collected:
    fleet = Fleet()
    for dev in ("cam-1", "cam-2", "door-1"):
        fleet.ingest(f"edge/{dev}/availability", b"online", retained=True)
        fleet.ingest(f"edge/{dev}/status", json.dumps(samples.status(dev)).encode(), retained=True)
    fleet.ingest("edge/cam-9/availability", b"offline", retained=True)
    return Collected(fleet, 7, 0.1)


def test_devices_by_id_and_glob() -> None:
    got = resolve_devices("cam-*, door-1", inventory())
    assert list(got) == ["cam-1", "cam-2", "cam-9", "door-1"]
    assert got["cam-1"].serving == samples.SHA and got["cam-1"].online and got["cam-1"].shadowing is None
    assert got["cam-9"].online is False and got["cam-9"].serving is None
    with pytest.raises(EdgeError, match="not known to the broker"):
        resolve_devices("cam-1,cam-7", inventory())
    with pytest.raises(EdgeError, match="matches none of the 4 devices"):
        resolve_devices("pi-*", inventory())


def test_windows_are_summed_per_device() -> None:
    acc = Accumulated()
    acc.add(ShadowReport("d", "n" * 64, 30, 1.0, 0, 5.0, 4.0))
    acc.add(ShadowReport("d", "n" * 64, 10, 0.6, 2, 9.0, 4.5))
    acc.add(ShadowReport("d", "n" * 64, 0, None, 0, None, None))  # an idle window
    r = acc.report("d", "n" * 64)
    assert r.inputs == 40 and r.errors == 2 and r.agreement == pytest.approx(0.9)
    assert r.candidate_p99_ms == 9.0 and r.active_p99_ms == 4.5 and acc.windows == 3


def test_command_ids_name_the_rollout_and_the_action() -> None:
    a = Action("rollback", "cam-1", "o" * 64)
    assert parse_cmd_id(cmd_id("abc123", a, 2), "abc123") == "rollback"
    assert parse_cmd_id(cmd_id("abc123", a, 2), "other") is None
    assert parse_cmd_id("abc123:reboot:cam-1:1", "abc123") is None and parse_cmd_id(7, "abc123") is None


def test_every_action_is_a_message_the_device_verifies(keys: dict[str, Any]) -> None:
    model = b"TFL3 stand-in bytes"
    signer = Signer(model, b"cat\ndog\n", keys["signer"], "2.0", window_s=30)
    previous = DeviceRecord(previous_sha256="a" * 64, previous_size=123, previous_version="1.0")
    pub = [keys["signer"].public_key()]
    for kind, sha, stage in [
        ("shadow", signer.sha256, "shadow"),
        ("install", signer.sha256, "install"),
        ("activate", signer.sha256, "activate"),
        ("drop", signer.sha256, "drop"),
        ("rollback", "a" * 64, "activate"),
    ]:
        msg = signer.message(Action(kind, "cam-1", sha), f"id-{kind}", previous)
        up = verify_message(msg, pub, device="cam-1")
        assert up.manifest.stage == stage and up.manifest.sha256 == sha and up.id == f"id-{kind}"
        if stage == "shadow":
            assert up.manifest.shadow_window_s == 10.0 and up.model == model and up.labels == b"cat\ndog\n"
        if kind == "rollback":
            assert up.manifest.version == "1.0" and up.manifest.size == 123
    with pytest.raises(UpdateRefusedError, match="update is for device .cam-1., this is .cam-2."):
        verify_message(
            signer.message(Action("drop", "cam-1", signer.sha256), "x", previous), pub, device="cam-2"
        )
