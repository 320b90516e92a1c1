"""edge-bench on the legacy device runtime (tflite-runtime 2.14, numpy<2), importing nothing heavy."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support import ROOT
from tests.support.process import subprocess_env

PROBE = """
import contextlib, io, json, sys
from edge.bench.cli import main
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = main(sys.argv[1:])
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'matplotlib', 'ai_edge_litert'})
import numpy
print('PROBE ' + json.dumps({'rc': rc, 'report': json.loads(buf.getvalue()), 'heavy': heavy,
                             'numpy': numpy.__version__}))
"""


def test_bench_with_tflite_runtime_2_14(mobilenet: Path) -> None:
    python = os.environ.get("EDGE_TFLITE_RUNTIME_PYTHON")
    assert python, (
        "EDGE_TFLITE_RUNTIME_PYTHON is not set: it must name the python of a venv with "
        "tflite-runtime==2.14.0 and numpy<2 (./dev.sh test sets it; locally export "
        "EDGE_TFLITE_RUNTIME_PYTHON=/work/venv-tflite/bin/python)"
    )
    r = subprocess.run(
        [
            python,
            "-c",
            PROBE,
            str(mobilenet),
            "--runtime",
            "tflite_runtime",
            "--runs",
            "20",
            "--min-secs",
            "0",
            "--warmup-min-secs",
            "0",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=subprocess_env(),
    )
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("PROBE ")), None)
    assert line, f"probe printed nothing (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"
    out = json.loads(line[6:])
    assert out["rc"] == 0 and out["heavy"] == [] and out["numpy"].startswith("1.")
    report = out["report"]
    assert report["runtime"] == {"name": "tflite_runtime", "version": "2.14.0"}
    assert report["runs"] == 20 and 0 < report["latency_ms"]["min"] <= report["latency_ms"]["p50"]


def test_plot_without_matplotlib_is_explained(mobilenet: Path, tmp_path: Path) -> None:
    """The device venv has no matplotlib (an optional extra): --plot fails fast, before benchmarking."""
    python = os.environ.get("EDGE_TFLITE_RUNTIME_PYTHON")
    assert python, "EDGE_TFLITE_RUNTIME_PYTHON is not set (see test_bench_with_tflite_runtime_2_14)"
    has = subprocess.run([python, "-c", "import matplotlib"], capture_output=True, env=subprocess_env())
    assert has.returncode != 0, f"{python} has matplotlib: this test needs the device venv without it"
    r = subprocess.run(
        [
            python,
            "-m",
            "edge.bench",
            str(mobilenet),
            "--runtime",
            "tflite_runtime",
            "--plot",
            str(tmp_path / "p.png"),
            "--min-secs",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=subprocess_env(),
    )
    assert r.returncode == 2, r.stderr
    assert "--plot needs matplotlib, which is not installed" in r.stderr
    assert "pip install 'edge-ml-toolkit[plot]'" in r.stderr
    assert not (tmp_path / "p.png").exists() and r.stdout == ""  # nothing was benchmarked
