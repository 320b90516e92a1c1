"""The subscriber side against the REAL agent (python -m edge run) and a real mosquitto:
every message it publishes follows the schemas, edge-watch parses them, and the Home Assistant
discovery configs point at topics that carry the values their templates read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from edge.contract import schemas
from tests.support import ROOT
from tests.support.agent import agent_command
from tests.support.broker import Mosquitto
from tests.support.mqtt import Capture
from tests.support.process import subprocess_env

HA_REQUIRED = ("name", "unique_id", "state_topic", "value_template", "availability", "device")


def start_agent(
    broker: Mosquitto,
    tmp: Path,
    source: Path,
    *args: str,
    device: str = "t1",
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    log = open(tmp / f"agent-{device}.log", "ab")
    return subprocess.Popen(
        agent_command(broker, device, tmp / f"state-{device}", "--source", source, *args),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=env or subprocess_env(),
    )


def render(template: str, payload: Any) -> str:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(value_json=payload)


def test_real_agent_messages_validate_and_discovery_points_at_real_data(
    mosquitto: Mosquitto, capture: Any, spawn: Any, coral: Path, tmp_path: Path
) -> None:
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(coral / "cat.bmp", images / "cat.bmp")
    shutil.copy(coral / "hot_dog.jpg", images / "hot_dog.jpg")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    everything = capture("edge/#", "homeassistant/#")
    watch = spawn("--broker", mosquitto.url, "--device", "t1", "--json", "--count", "6", "--timeout", "120")
    agent = start_agent(
        mosquitto,
        tmp_path,
        images,
        "--model",
        str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
        "--labels",
        str(coral / "imagenet_labels.txt"),
        "--top-k",
        "3",
        "--metrics-interval",
        "0.5",
    )
    try:
        everything.wait_for("edge/t1/predictions", 2)
        everything.wait_for("edge/t1/errors", 1)
        for cmd in (
            '{"id": "a1", "action": "ping"}',
            "not json at all",
            '{"id": 7, "action": "fly"}',
            '{"id": "b1", "action": "bench", "runs": 3, "min_secs": 0, "warmup_min_secs": 0}',
        ):
            everything.publish("edge/t1/cmd", cmd)
        everything.wait_for("edge/t1/cmd/result", 4)
        everything.wait_for("edge/t1/bench", 1)
        everything.wait_for("edge/t1/metrics", 1)
        configs_before = len(everything.wait_for("homeassistant/sensor/edge_t1/+/config", 5))
        # Home Assistant restarted: its birth message makes the agent send discovery again
        everything.publish("homeassistant/status", "online")
        everything.wait_for("homeassistant/sensor/edge_t1/+/config", configs_before + 5)
    finally:
        agent.terminate()
        rc = agent.wait(30)
    assert rc == 0, (tmp_path / "agent-t1.log").read_text()[-3000:]
    offline = everything.wait_for("edge/t1/availability", 2)[-1]
    assert offline.payload == b"offline" and offline.retain is False  # live delivery of a retained publish

    # 1. every message the agent published follows the contract
    seen: dict[str, int] = {}
    for m in everything.on("edge/#"):
        where = schemas.split_topic(m.topic)
        if where is None:
            assert m.topic.startswith("edge/t1/cmd"), m.topic  # our own commands
            continue
        kind = where[1]
        payload = m.payload.decode() if kind == "availability" else json.loads(m.payload)
        assert schemas.problems(kind, payload) == [], (m.topic, payload)
        assert schemas.problems(kind, payload, builtin=True) == [], (m.topic, payload)
        seen[kind] = seen.get(kind, 0) + 1
    assert set(seen) == {
        "availability",
        "status",
        "predictions",
        "errors",
        "metrics",
        "cmd_result",
        "bench",
        "audit",
    }, seen
    results = {
        json.loads(m.payload)["id"]: json.loads(m.payload) for m in everything.on("edge/t1/cmd/result")
    }
    assert results["a1"]["ok"] is True and results[7]["ok"] is False and results[None]["ok"] is False

    # 2. edge-watch --json --count 6: six validated messages, one JSON object a line
    rc, lines, err = watch.finish(timeout=60)
    assert rc == 0, err
    parsed = [json.loads(line) for line in lines]
    assert len(parsed) == 6 and all(p["device"] == "t1" for p in parsed)
    assert {"availability", "status", "predictions"} <= {p["kind"] for p in parsed}
    for p in parsed:
        assert schemas.problems(p["kind"], p["payload"]) == []
    assert "malformed" not in err

    # 3. discovery: required keys, and every template reads a key present in the real payloads
    configs = {
        m.topic: json.loads(m.payload)
        for m in everything.on("homeassistant/sensor/edge_t1/+/config")
        if m.payload
    }
    assert {t.split("/")[3] for t in configs} == {
        "last_label",
        "last_score",
        "inference_latency",
        "inferences_per_s",
        "cpu_temperature",
    }
    status = json.loads(everything.on("edge/t1/status")[-1].payload)
    for topic, cfg in configs.items():
        for key in HA_REQUIRED:
            assert cfg.get(key), (topic, key)
        (avail,) = cfg["availability"]
        assert (avail["topic"], avail["payload_available"], avail["payload_not_available"]) == (
            "edge/t1/availability",
            "online",
            "offline",
        )
        assert b"online" in [m.payload for m in everything.on(avail["topic"])]
        assert (
            cfg["device"]["identifiers"] == ["edge_t1"]
            and cfg["device"]["sw_version"] == status["agent_version"]
        )
        data = everything.on(cfg["state_topic"])
        assert data, f"{topic}: nothing was published on its state_topic {cfg['state_topic']}"
        for m in data:
            value = render(
                cfg["value_template"], json.loads(m.payload)
            )  # StrictUndefined: a missing key raises
            if topic.endswith(
                (
                    "last_label/config",
                    "last_score/config",
                    "inference_latency/config",
                    "inferences_per_s/config",
                )
            ):
                assert value not in ("", "None"), (topic, value)
    labels = {
        render(
            configs["homeassistant/sensor/edge_t1/last_label/config"]["value_template"], json.loads(m.payload)
        )
        for m in everything.on("edge/t1/predictions")
    }
    assert any("cat" in label for label in labels), labels


def test_discovery_can_be_switched_off(
    mosquitto: Mosquitto, capture: Any, coral: Path, tmp_path: Path
) -> None:
    everything = capture("homeassistant/#", "edge/off/status")
    agent = start_agent(
        mosquitto,
        tmp_path,
        coral / "cat.bmp",
        "--model",
        str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
        "--once",
        device="off",
        env=subprocess_env(EDGE_HOMEASSISTANT_ENABLED="false"),
    )
    assert agent.wait(60) == 0, (tmp_path / "agent-off.log").read_text()[-3000:]
    everything.wait_for("edge/off/status")
    assert everything.on("homeassistant/#") == []


def test_dashboard_shows_real_agents(mosquitto: Mosquitto, spawn: Any, coral: Path, tmp_path: Path) -> None:
    """Two real agents (an image classifier and an LSTM digit model) on the dashboard in headless Chromium."""
    from tests.support.broker import free_port, wait_port
    from tests.watch.test_dashboard import DOCS_SHOT, Dom, chromium

    port = free_port()
    spawn("--broker", mosquitto.url, "--web", f"127.0.0.1:{port}", "--sse-seconds", "2", "--timeout", "120")
    assert wait_port("127.0.0.1", port, timeout=30)
    url = f"http://127.0.0.1:{port}/"
    pets = tmp_path / "pets"
    pets.mkdir()
    for i in range(6):
        shutil.copy(
            coral / ("cat.bmp" if i % 2 else "hot_dog.jpg"), pets / f"img{i}{'.bmp' if i % 2 else '.jpg'}"
        )
    runs = [
        start_agent(
            mosquitto,
            tmp_path,
            pets,
            "--model",
            str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
            "--labels",
            str(coral / "imagenet_labels.txt"),
            "--once",
            device="pi-kitchen",
        ),
        start_agent(
            mosquitto,
            tmp_path,
            coral / "mnist_nine.bmp",
            "--model",
            str(coral / "keras_lstm_mnist_ptq.tflite"),
            "--once",
            device="pi-garage",
        ),
    ]
    for run in runs:
        assert run.wait(120) == 0
    r = chromium(url, tmp_path, "--virtual-time-budget=1500", "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    dom = Dom(r.stdout)
    rows = [e["attrs"]["data-device"] for e in dom.find("tr", class_="device")]
    assert rows == ["pi-garage", "pi-kitchen"]
    labels = [e["text"] for e in dom.find("td", class_="label")]
    assert labels[0] == "9" and labels[1] != "-"  # the LSTM reads the nine
    assert [e["text"] for e in dom.find("td", class_="avail")] == ["offline", "offline"]  # --once: clean exit
    series = {
        s["attrs"]["data-device"]: int(s["attrs"]["data-points"])
        for s in dom.find("polyline", class_="series")
    }
    assert series == {"pi-garage": 1, "pi-kitchen": 6}
    shot = tmp_path / "dashboard-real.png"
    r = chromium(url, tmp_path, "--virtual-time-budget=500", f"--screenshot={shot}", "--window-size=1200,800")
    assert r.returncode == 0 and shot.stat().st_size > 10_000
    if not DOCS_SHOT.exists():  # docs/img/dashboard.png comes from here: delete it and rerun to refresh
        shutil.copy(shot, DOCS_SHOT)


def test_discovery_refused_by_the_acl_turns_itself_off_and_the_agent_stays_connected(
    tmp_path: Path, coral: Path
) -> None:
    # An ACL written before Home Assistant was around: everything under edge/, nothing else.
    # mosquitto drops a client after each denied publish; the agent must not lose its link for ever.
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite edge/#\n")
    as_root = (
        "user root\n" if os.geteuid() == 0 else ""
    )  # else mosquitto, as user mosquitto, cannot read tmp_path
    broker = Mosquitto(
        workdir=tmp_path / "broker", listener_conf=f"{as_root}allow_anonymous true\nacl_file {acl}"
    )
    broker.workdir.mkdir()
    broker.start()
    try:
        seen = Capture(broker, "edge/#")
        images = tmp_path / "in"
        images.mkdir()
        agent = start_agent(
            broker,
            tmp_path,
            images,
            "--model",
            str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
            "--metrics-interval",
            "0.5",
            device="acl1",
        )

        def settled() -> bool:  # six metrics (~3 s) on the same connection as the last "online"
            topics = [(m.topic, m.payload) for m in seen.messages]
            last_online = max(
                (i for i, t in enumerate(topics) if t == ("edge/acl1/availability", b"online")), default=None
            )
            return (
                last_online is not None
                and sum(1 for t, _ in topics[last_online:] if t == "edge/acl1/metrics") >= 6
            )

        try:
            deadline = time.monotonic() + 60
            while not settled():
                assert time.monotonic() < deadline, "the agent never kept a connection for 3 s"
                time.sleep(0.2)
            shutil.copy(coral / "cat.bmp", images / "cat.bmp")
            seen.wait_for("edge/acl1/predictions", 1)
        finally:
            agent.terminate()
            assert agent.wait(30) == 0
        log = (tmp_path / "agent-acl1.log").read_text()
        assert "refused Home Assistant discovery" in log and "homeassistant/sensor/edge_acl1/#" in log, log[
            -3000:
        ]
        seen.close()
    finally:
        broker.stop()
