"""The README's main command (./dev.sh demo -> edge-demo), run from the checkout as CI does."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from edge.contract import schemas
from tests.support.process import run_module, subprocess_env


def _path_without_mosquitto() -> str:
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if d and not (Path(d) / "mosquitto").exists())


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_demo_runs_the_whole_chain_by_itself(tmp_path: Path, broker: str) -> None:
    """No --broker: it starts its own, mosquitto when on PATH, else amqtt (pure Python, MQTT 3.1.1)."""
    out = tmp_path / "demo"
    env = subprocess_env()
    if broker == "amqtt":
        env["PATH"] = _path_without_mosquitto()
    else:
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
        assert shutil.which("mosquitto", path=env["PATH"]), (
            "mosquitto is not installed (apt install mosquitto)"
        )
    r = run_module("converter.demo", "--out", str(out), timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = r.stdout
    for step in ("1/5 training", "2/5 edge-convert", "3/5 broker", "4/5 edge-agent", "5/5 predictions"):
        assert step in text
    assert f"using {broker} on mqtt://127.0.0.1:" in text
    if broker == "amqtt":
        assert "mosquitto is not on PATH; MQTT 3.1.1 only: the agent uses protocol 311" in text
        assert "protocol = 311" in (out / "agent.toml").read_text()
    right, total = map(int, re.search(r"(\d+)/(\d+) digits right", text).groups())  # type: ignore[union-attr]
    assert total == 20 and right >= 17, text[-2500:]
    # every artefact it names exists, where it says
    named = dict(re.findall(r"^  (\w[\w ()]+?)\s{2,}(/\S+)$", text, flags=re.M))
    for name in (
        "Keras model",
        "int8 model",
        "conversion report",
        "sample images",
        "agent log",
        "predictions (CSV)",
        "broker log",
    ):
        assert Path(named[name]).exists(), (name, named)
    assert Path(named["int8 model"]).read_bytes()[4:8] == b"TFL3"
    report = json.loads(Path(named["conversion report"]).read_text())
    assert report["quantization"]["mode"] == "int8" and report["output"]["path"] == named["int8 model"]
    with open(named["predictions (CSV)"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["source"] for r in rows) == sorted(p.name for p in (out / "images").glob("*.png"))
    assert all(float(r["latency_total_ms"]) > 0 and r["kind"] == "classifier" for r in rows)
    assert "on ai_edge_litert" in Path(named["agent log"]).read_text()
    # the messages it read back were validated by the same code as edge-watch: none malformed
    assert "0 malformed messages" in text
    assert schemas.backend() == "jsonschema"
