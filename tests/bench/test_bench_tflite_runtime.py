"""edge-bench on the legacy device runtime (tflite-runtime 2.14, numpy<2), importing nothing heavy."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.process import run_module, run_python

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


def test_bench_with_tflite_runtime_2_14(mobilenet: Path, tflite_python: str) -> None:
    quick = ("--runs", "20", "--min-secs", "0", "--warmup-min-secs", "0", "--json")
    r = run_python(
        "-c", PROBE, mobilenet, "--runtime", "tflite_runtime", *quick, python=tflite_python, timeout=180
    )
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("PROBE ")), None)
    assert line, f"probe printed nothing (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"
    out = json.loads(line[6:])
    assert out["rc"] == 0 and out["heavy"] == [] and out["numpy"].startswith("1.")
    report = out["report"]
    assert report["runtime"] == {"name": "tflite_runtime", "version": "2.14.0"}
    assert report["runs"] == 20 and 0 < report["latency_ms"]["min"] <= report["latency_ms"]["p50"]


def test_plot_without_matplotlib_is_explained(mobilenet: Path, tmp_path: Path, tflite_python: str) -> None:
    """The device venv has no matplotlib (an optional extra): --plot fails fast, before benchmarking."""
    has = run_python("-c", "import matplotlib", python=tflite_python, timeout=60)
    assert has.returncode != 0, f"{tflite_python} has matplotlib: this test needs the device venv without it"
    plot = ("--plot", tmp_path / "p.png", "--min-secs", "30")
    r = run_module(
        "edge.bench", mobilenet, "--runtime", "tflite_runtime", *plot, python=tflite_python, timeout=60
    )
    assert r.returncode == 2, r.stderr
    assert "--plot needs matplotlib, which is not installed" in r.stderr
    assert "pip install 'edge-ml-toolkit[plot]'" in r.stderr
    assert not (tmp_path / "p.png").exists() and r.stdout == ""  # nothing was benchmarked
