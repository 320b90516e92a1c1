"""edge-fleet ls: real agents split over two mosquitto brokers joined by a bridge; one ls reaches all."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from tests.support import samples
from tests.support.broker import Mosquitto, free_port
from tests.support.mqtt import publish
from tests.support.process import run_module
from tests.watch.test_agent_integration import start_agent


def ls(broker: Mosquitto, *args: str) -> Any:
    done = run_module("edge.fleet", "ls", "--broker", broker.url, *args, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def wait_listing(broker: Mosquitto, want: dict[str, bool], timeout: float = 90) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        doc = ls(broker, "--json")
        got = {d["device"]: d["online"] for d in doc["devices"]}
        complete = all(d["model_sha256"] for d in doc["devices"] if d["online"])
        if got == want and complete:
            return list(doc["devices"])
        assert time.monotonic() < deadline, f"wanted {want} on {broker.url}, ls says {got}"
        time.sleep(1)


def test_ls_on_one_broker_lists_agents_on_both(
    bridged: tuple[Mosquitto, Mosquitto], coral: Path, tmp_path: Path
) -> None:
    a, b = bridged
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(coral / "cat.bmp", images / "cat.bmp")
    model = coral / "mobilenet_v1_0.25_128_quant.tflite"
    args = (
        "--model",
        str(model),
        "--labels",
        str(coral / "imagenet_labels.txt"),
        "--metrics-interval",
        "0.5",
    )
    agents = {
        "cam-a1": start_agent(a, tmp_path, images, *args, device="cam-a1"),
        "cam-a2": start_agent(a, tmp_path, images, *args, device="cam-a2"),
        "cam-b1": start_agent(b, tmp_path, images, *args, device="cam-b1"),
    }
    try:
        everyone = {d: True for d in agents}
        devices = wait_listing(a, everyone)  # two local, one across the bridge
        sha = hashlib.sha256(model.read_bytes()).hexdigest()
        for d in devices:
            assert d["model_sha256"] == sha and d["model"] == model.name
            assert d["delegate"] == "cpu" and d["runtime"] and d["arch"]
            assert d["last_seen_ago_s"] is not None and d["last_seen_ago_s"] < 120
        assert {d["model_sha256"] for d in wait_listing(b, everyone)} == {sha}  # and b sees a's agents
        # spool depth comes with a metrics message (not retained): listening 1.5 s catches every device's
        slow = ls(b, "--json", "--settle", "1.5")
        assert [d["spool_depth"] for d in slow["devices"]] == [0, 0, 0]
        table = ls(b)
        assert "3 devices, 3 online" in table
        assert all(name in table for name in agents)
        # a device on b stops: a sees it offline through the bridge (retained, so a later ls still does)
        agents["cam-b1"].terminate()
        assert agents["cam-b1"].wait(30) == 0
        wait_listing(a, {**everyone, "cam-b1": False}, timeout=30)
    finally:
        for p in agents.values():
            if p.poll() is None:
                p.terminate()
                p.wait(30)


def test_ls_table_json_and_spool_depth(mosquitto: Mosquitto) -> None:
    publish(
        mosquitto,
        [
            ("edge/pi-1/availability", "online"),
            ("edge/pi-1/status", samples.status("pi-1")),
            ("edge/pi-9/availability", "offline"),
            ("edge/pi-5/status", {"not": "a status"}),
        ],
        retain=True,
    )
    doc = ls(mosquitto, "--json")
    by_id = {d["device"]: d for d in doc["devices"]}
    assert set(by_id) == {"pi-1", "pi-9"} and doc["malformed"] == 1 and doc["online"] == 1
    assert by_id["pi-1"]["model_sha256"] == samples.SHA and by_id["pi-1"]["online"] is True
    assert by_id["pi-9"]["online"] is False and by_id["pi-9"]["model_sha256"] is None
    assert by_id["pi-1"]["spool_depth"] is None  # metrics are not retained: none arrived
    table = ls(mosquitto)
    assert table.splitlines()[0].split()[:3] == ["DEVICE", "ONLINE", "MODEL"]
    assert "pi-9" in table and " NO " in table and "2 devices, 1 online" in table
    assert "1 messages broke the contract" in table


def test_ls_bad_input_and_unreachable_broker() -> None:
    port = free_port()
    done = run_module("edge.fleet", "ls", "--broker", f"mqtt://127.0.0.1:{port}", timeout=60)
    assert done.returncode == 2 and "cannot reach the broker" in done.stderr and "fix:" in done.stderr
    done = run_module("edge.fleet", "ls", "--broker", "mqtt://127.0.0.1:1", "--settle", "0", timeout=60)
    assert done.returncode == 2 and "--settle must be > 0" in done.stderr
    done = run_module("edge.fleet", "ls", "--broker", "ftp://x", timeout=60)
    assert done.returncode == 2, done.stderr
    done = run_module("edge.fleet", "--version", timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("edge-fleet ")
