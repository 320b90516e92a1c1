"""What the agent's long-running process keeps imported: the RSS budget of issue 3, asserted without timing.

benchmarks/agent_bench.py measures the RSS ratio; these tests pin down the causes it depends on, in a
subprocess running the agent as users do: the config is msgspec Records validated in-process (no
forked child) and pydantic is never imported, installed or not; no importlib.metadata; a junk file does not make Pillow import its ~40 other plugins;
paho's ssl and urllib.request stay stand-ins on a plain-TCP broker (edge.agent.footprint), and argparse
does not bring shutil.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.agent import agent_args
from tests.support.broker import Mosquitto
from tests.support.process import run_module, run_python

_PROBE = textwrap.dedent("""
    import json, os, sys
    from edge.agent.cli import main
    pid = os.getpid()
    rc = main(sys.argv[1:])
    from edge.deferred import is_loaded
    mods = sorted(m for m in sys.modules if is_loaded(m))  # a deferred stand-in never used is not loaded
    print("PROBE " + json.dumps({"rc": rc, "same_pid": pid == os.getpid(), "modules": mods}))
""")

PREINIT_PLUGINS = {f"PIL.{n}ImagePlugin" for n in ("Bmp", "Gif", "Jpeg", "Png", "Ppm")}


def test_steady_state_process_keeps_no_pydantic_metadata_or_extra_pil_plugins(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, capture
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a_cat.bmp").write_bytes((coral / "cat.bmp").read_bytes())
    (src / "b_hot_dog.jpg").write_bytes((coral / "hot_dog.jpg").read_bytes())
    (src / "c_junk.tif").write_bytes(b"II*\x00 not really a TIFF")
    sub = capture("edge/fp/predictions", "edge/fp/errors")
    args = agent_args(
        mosquitto,
        "fp",
        tmp_path / "state",
        "--model",
        coral / "mobilenet_v1_0.25_128_quant.tflite",
        "--source",
        src,
        "--once",
        "--top-k",
        "2",
    )
    r = run_python("-c", _PROBE, *args, timeout=180)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("PROBE ")), None)
    assert line, f"probe printed nothing (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"
    out = json.loads(line[6:])
    assert out["rc"] == 0, r.stderr
    assert out["same_pid"]
    mods = set(out["modules"])
    assert not {m for m in mods if m.split(".")[0] in ("pydantic", "pydantic_core")}
    assert "edge.agent.config" in mods and "msgspec" in mods  # validated here, with msgspec
    assert "importlib.metadata" not in mods
    unused = {
        "ssl",
        "_ssl",
        "urllib.request",
        "http.client",
        "email.message",
        "shutil",
        "importlib.resources",
    }
    assert not unused & mods, f"the agent loaded {sorted(unused & mods)}"
    plugins = {m for m in mods if m.startswith("PIL.") and m.endswith("ImagePlugin")}
    assert plugins <= PREINIT_PLUGINS, f"Pillow loaded {sorted(plugins - PREINIT_PLUGINS)}"
    # and the work was really done: two predictions (top-k from the validated flags), one clear error
    preds = sub.wait(
        lambda s: len(s.json("edge/fp/predictions")) >= 2 and s.json("edge/fp/predictions"),
        30,
        "two predictions",
    )
    assert all(len(p["top_k"]) == 2 for p in preds)
    err = sub.wait(lambda s: s.json("edge/fp/errors"), 30, "the junk file's error")[0]
    assert err["source"] == "c_junk.tif" and "not a JPEG, PNG or BMP" in err["error"]


def test_config_errors_keep_their_message_and_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text("[postprocess]\ntop_k = 0\n[mqtt]\nbogus = 1\n")
    r = run_module("edge", "run", "--config", bad, "--source", "mqtt", "--model", "m.tflite", timeout=120)
    assert r.returncode == 2, r
    assert "postprocess.top_k = 0" in r.stderr and "mqtt.bogus" in r.stderr and "unknown key" in r.stderr
    assert "fix:" in r.stderr and "Traceback" not in r.stderr


def test_config_is_read_only_and_masks_secrets() -> None:
    from edge.agent.config import load_config
    from edge.validation import to_builtins

    cfg = load_config(
        None,
        flags={"postprocess": {"top_k": 3}, "state_dir": "~/x"},
        environ={"EDGE_MQTT_PASSWORD": "hunter2"},
    )
    assert cfg.postprocess.top_k == 3 and cfg.resolved_state_dir() == Path("~/x").expanduser()
    with pytest.raises(AttributeError):
        cfg.postprocess.top_k = 4  # type: ignore[misc]
    assert cfg.mqtt.password is not None and cfg.mqtt.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(cfg) and "hunter2" not in json.dumps(to_builtins(cfg))
    assert to_builtins(cfg)["mqtt"]["password"] == "**********"


def test_pydantic_is_not_a_dependency_of_the_device_package() -> None:
    """pyproject's base dependencies (the device install) carry msgspec, not pydantic; edge/ never names it."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("msgspec") for d in deps)
    assert not any("pydantic" in d for d in deps)
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "edge").rglob("*.py") if "pydantic" in p.read_text("utf-8")
    ]
    assert offenders == []


def test_directory_record_forgets_deleted_files(tmp_path: Path) -> None:
    """Processed-file records must not grow for ever when processed files are cleaned away."""
    import sqlite3
    import threading

    from edge.agent.sources.directory import DirectorySource

    d, state = tmp_path / "in", tmp_path / "state"
    d.mkdir()
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        (d / n).write_bytes(b"x")
    stop = threading.Event()
    src = DirectorySource(d, state, settle_s=0.0)
    for item in src.items(stop, once=True):
        src.done(item)
    (d / "a.jpg").unlink()
    (d / "b.jpg").unlink()
    assert list(src.items(stop, once=True)) == []  # c.jpg still done; the scan drops a and b
    assert set(src.record.seen) == {"c.jpg"}
    src.close()
    rows = sqlite3.connect(state / "sources.db").execute("SELECT name FROM processed").fetchall()
    assert rows == [("c.jpg",)]
    src = DirectorySource(d, state, settle_s=0.0)  # and after a restart c.jpg is still not redone
    assert list(src.items(stop, once=True)) == []
    src.close()
