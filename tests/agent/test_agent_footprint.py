"""What the agent's long-running process keeps imported: the RSS budget of issue 3, asserted without timing.

benchmarks/agent_bench.py measures the RSS ratio; these tests pin down the causes it depends on, in a
subprocess running the agent as users do: pydantic validates the config in a forked child and never
loads here; no importlib.metadata; a junk file does not make Pillow import its ~40 other plugins;
paho's ssl and urllib.request stay stand-ins on a plain-TCP broker (edge.agent.footprint), and argparse
does not bring shutil.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from tests.support.agent import agent_args
from tests.support.broker import Mosquitto
from tests.support.process import run_module, run_python

_PROBE = textwrap.dedent("""
    import json, sys
    import edge.agent.config_view as cv
    forked = []
    start = cv.ForkedValidation.start
    def spy(self):
        out = start(self)
        forked.append(self._pid is not None)
        return out
    cv.ForkedValidation.start = spy
    from edge.agent.cli import main
    rc = main(sys.argv[1:])
    from edge.deferred import is_loaded
    mods = sorted(m for m in sys.modules if is_loaded(m))  # a deferred stand-in never used is not loaded
    print("PROBE " + json.dumps({"rc": rc, "forked": forked, "modules": mods}))
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
    assert out["forked"] == [True], "the config was not validated in a forked child"
    mods = set(out["modules"])
    assert not {m for m in mods if m.split(".")[0] in ("pydantic", "pydantic_core")}
    assert "importlib.metadata" not in mods
    assert "edge.agent.config" not in mods
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


def test_config_errors_from_the_child_keep_their_message_and_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text("[postprocess]\ntop_k = 0\n[mqtt]\nbogus = 1\n")
    r = run_module("edge", "run", "--config", bad, "--source", "mqtt", "--model", "m.tflite", timeout=120)
    assert r.returncode == 2, r
    assert "postprocess.top_k = 0" in r.stderr and "mqtt.bogus" in r.stderr and "unknown key" in r.stderr
    assert "fix:" in r.stderr and "Traceback" not in r.stderr


def test_config_view_is_read_only_and_matches_the_model() -> None:
    from edge.agent.config import load_config
    from edge.agent.config_view import ConfigView

    cfg = load_config(None, flags={"postprocess": {"top_k": 3}, "state_dir": "~/x"}, environ={})
    view = ConfigView(cfg.model_dump())
    assert view.postprocess.top_k == 3 and view.mqtt.broker == cfg.mqtt.broker
    assert view.resolved_state_dir() == cfg.resolved_state_dir()
    assert view.model_dump() == cfg.model_dump()
    assert view.model_dump(mode="json") == cfg.model_dump(mode="json")
    import copy
    import pickle

    assert (
        copy.deepcopy(view) == view == pickle.loads(pickle.dumps(view)) and copy.copy(view).mqtt == view.mqtt
    )
    try:
        view.postprocess.top_k = 4
    except AttributeError as exc:
        assert "read-only" in str(exc)
    else:
        raise AssertionError("a ConfigView accepted an assignment")


def test_secrets_cross_without_pydantic() -> None:
    import pickle

    from pydantic import SecretStr

    from edge.agent.config_view import ConfigView, Secret, plain

    dumped = plain({"mqtt": {"password": SecretStr("hunter2"), "hosts": [SecretStr("a")]}})
    assert b"pydantic" not in pickle.dumps(dumped)  # the parent unpickles it without importing pydantic
    view = ConfigView(pickle.loads(pickle.dumps(dumped)))
    assert isinstance(view.mqtt.password, Secret) and view.mqtt.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(view) and str(view.mqtt.password) == "**********"


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


class _Access(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disabled: list[str] = Field(default_factory=list, description="refused actions")

    def allows(self, action: str) -> bool:
        return action not in self.disabled

    @property
    def strict(self) -> bool:
        return "*" in self.disabled


class _Root(BaseModel):
    model_config = ConfigDict(extra="forbid")
    commands: _Access = Field(default_factory=_Access, description="what runs")


def test_model_methods_work_on_the_view() -> None:
    """Sections with behaviour (e.g. a ``commands.allows(action)``) keep it across the fork."""
    import pickle

    from edge.agent.config_view import ConfigView, snapshot

    tree = snapshot(_Root.model_validate({"commands": {"disabled": ["bench", "*"]}}))
    view = ConfigView(pickle.loads(pickle.dumps(tree)))
    assert view.commands.allows("ping") and not view.commands.allows("bench") and view.commands.strict
    assert pickle.loads(pickle.dumps(view)).commands.allows("reload")
    assert view.model_dump() == {"commands": {"disabled": ["bench", "*"]}}
    with pytest.raises(AttributeError, match="no config key 'nope'"):
        view.commands.nope  # noqa: B018
    with pytest.raises(AttributeError, match="no config key 'model_validate'"):
        view.model_validate  # noqa: B018  (pydantic's own methods are not the model's)
