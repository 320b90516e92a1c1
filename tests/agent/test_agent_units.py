"""Agent pieces that need no broker: config, commands, sources, metrics, payloads."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from edge.agent import commands
from edge.agent.config import AgentConfig, ConfigError, check_file, env_overrides, load_config
from edge.agent.metrics import LatencyWindow, cpu_temp_c, rss_mb
from edge.agent.sources import SourceError, source_kind
from edge.agent.sources.directory import DirectorySource
from edge.contract import messages
from edge.transport.topics import Topics
from tests.support.process import run_module


def test_config_precedence_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text(
        'state_dir = "/tmp/x"\n[mqtt]\nbroker = "mqtt://file:1883"\nprefix = "fromfile"\n'
        "[postprocess]\ntop_k = 7\n"
    )
    cfg = load_config(
        f,
        environ={
            "EDGE_MQTT_BROKER": "mqtt://env:1",
            "EDGE_POSTPROCESS_TOP_K": "4",
            "EDGE_TFLITE_RUNTIME_PYTHON": "/ignored",
        },
        flags={"postprocess": {"top_k": 2}},
    )
    assert cfg.mqtt.broker == "mqtt://env:1" and cfg.mqtt.prefix == "fromfile"
    assert cfg.postprocess.top_k == 2 and cfg.state_dir == Path("/tmp/x")
    assert env_overrides({"EDGE_ONCE": "true"}) == {"once": "true"}
    assert load_config(None, environ={"EDGE_MQTT_PROTOCOL": "311"}).mqtt.protocol == 311


def test_config_errors_name_key_value_and_message(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text('[mqtt]\nprefx = "x"\nkeepalive_s = 1\n[postprocess]\ntop_k = "many"\n')
    problems = {k: (v, m) for k, v, m in check_file(f)}
    assert set(problems) == {"mqtt.prefx", "mqtt.keepalive_s", "postprocess.top_k"}
    assert "unknown key" in problems["mqtt.prefx"][1]
    assert problems["mqtt.keepalive_s"] == (1, "Expected `int` >= 5")
    with pytest.raises(ConfigError, match="postprocess.top_k = 'many'"):
        load_config(f, environ={})
    r = run_module("edge", "check-config", str(f), timeout=60)
    assert r.returncode == 1, r
    assert "mqtt.keepalive_s = 1: Expected `int` >= 5" in r.stderr, r.stderr
    assert "mqtt.prefx = 'x': unknown key (did you mean 'prefix'?" in r.stderr, r.stderr
    good = tmp_path / "good.toml"
    good.write_text('[model]\npath = "m.tflite"\n[source]\nspec = "mqtt"\n')
    r = run_module("edge", "check-config", str(good), timeout=60)
    assert r.returncode == 0 and "ok" in r.stdout, r


def test_every_config_field_is_described() -> None:
    from edge.agent.config import described_fields

    keys = []
    for key, _field, meta in described_fields(AgentConfig):
        assert meta is not None and meta.title and meta.description, f"{key} lacks a title/description"
        keys.append(key)
    assert {"mqtt.broker", "ota.guard.timeout_s", "commands.disabled", "audit.max_bytes"} <= set(keys)


def test_source_kinds(tmp_path: Path) -> None:
    assert (
        source_kind("mqtt") == "mqtt"
        and source_kind("camera") == "camera"
        and source_kind("camera:2") == "camera"
    )
    assert source_kind(str(tmp_path)) == "directory"
    with pytest.raises(SourceError, match="neither an existing file"):
        source_kind(str(tmp_path / "nope"))


def test_directory_source_skips_processed_after_restart(tmp_path: Path) -> None:
    d, state = tmp_path / "in", tmp_path / "state"
    d.mkdir()
    for n in ("a.jpg", "b.jpg", ".hidden", "c.jpg.part"):
        (d / n).write_bytes(b"x")
    stop = threading.Event()
    src = DirectorySource(d, state, poll_interval_s=0.05, settle_s=0.0)
    items = list(src.items(stop, once=True))
    assert sorted(i.name for i in items) == ["a.jpg", "b.jpg"]
    src.done(next(i for i in items if i.name == "a.jpg"))  # b.jpg: "crashed" before its result was spooled
    src.close()
    src = DirectorySource(d, state, settle_s=0.0)
    assert [i.name for i in src.items(stop, once=True)] == ["b.jpg"]  # a.jpg is recorded as done
    src.close()
    # a replaced file (new content) is a new input
    time.sleep(0.01)
    (d / "a.jpg").write_bytes(b"xy")
    src = DirectorySource(d, state, settle_s=0.0)
    assert sorted(i.name for i in src.items(stop, once=True)) == ["a.jpg", "b.jpg"]
    src.close()


def test_directory_source_picks_up_new_files(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    stop = threading.Event()
    src = DirectorySource(d, tmp_path / "state", poll_interval_s=0.05, settle_s=0.1)
    seen: list[str] = []

    def consume() -> None:
        for item in src.items(stop, once=False):
            seen.append(item.name)
            src.done(item)

    t = threading.Thread(target=consume)
    t.start()
    (d / "new.jpg").write_bytes(b"1")
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join(5)
    src.close()
    assert seen == ["new.jpg"]


def test_handler_bug_is_an_error_result_not_a_crash() -> None:
    reg = commands.CommandRegistry()
    reg.register("boom", lambda cmd: 1 / 0)
    assert reg.dispatch(b'{"id":9,"action":"boom"}')[2:] == (
        False,
        None,
        "ZeroDivisionError: division by zero",
    )


def test_latency_window_percentiles() -> None:
    w = LatencyWindow(window_s=10)
    w.add(1000.0, now=80.0)  # older than the window when the snapshot is taken
    for i in range(1, 101):
        w.add(float(i), now=100.0 + i * 0.01)
    snap = w.snapshot(now=102.0)
    assert snap["inferences"] == 100
    assert 49 <= snap["latency_ms"]["p50"] <= 52 and snap["latency_ms"]["p99"] <= 100


def test_health_readings() -> None:
    rss = rss_mb()
    assert rss is not None and 5 < rss < 4096
    t = cpu_temp_c()
    assert t is None or -40 < t < 150


def test_payload_envelope() -> None:
    p = messages.error("dev1", source="x.jpg", error="bad", fix="good")
    assert p["schema"] == 1 and p["device"] == "dev1"
    assert p["ts"].endswith("Z") and len(p["ts"]) == len("2026-11-29T14:10:00.123Z")
    assert json.loads(json.dumps(p)) == p
    assert Topics("edge", "d").cmd_result == "edge/d/cmd/result"
