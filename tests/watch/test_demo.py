"""The README's main command (./dev.sh demo -> edge-demo), run from the checkout as CI does."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from edge.contract import schemas
from tests.conftest import run_module


@pytest.mark.slow
def test_demo_runs_the_whole_chain_by_itself(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = run_module("converter.demo", "--out", str(out), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = r.stdout
    for step in ("1/5 training", "2/5 edge-convert", "3/5 broker", "4/5 edge-agent", "5/5 predictions"):
        assert step in text
    assert "using mosquitto on mqtt://127.0.0.1:" in text  # no --broker: it started its own
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
