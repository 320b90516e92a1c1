"""`python -m edge.bench` end to end: JSON contract, table, plot, --reference, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.bench.report import table
from tests.bench.bench_helpers import QUICK, bench_cli

CONTRACT = {
    "schema",
    "device",
    "ts",
    "model",
    "runtime",
    "delegate",
    "threads",
    "init_ms",
    "first_inference_ms",
    "warmup_mean_ms",
    "latency_ms",
    "inferences_per_s",
    "peak_rss_mb",
    "rss_delta_mb",
    "board",
    "arch",
    "cpu",
    "edgetpu",
    "models",
}


def test_json_report_keys(cli_json: dict[str, Any], mobilenet: Path, lstm: Path) -> None:
    r = cli_json["report"]
    assert CONTRACT <= r.keys()
    assert r["model"].keys() >= {"path", "size_bytes", "sha256"}
    assert r["model"]["path"] == str(mobilenet) and r["model"]["size_bytes"] == mobilenet.stat().st_size
    assert r["runtime"] == {"name": "ai_edge_litert", "version": "2.3.0"}
    assert set(r["latency_ms"]) == {"min", "mean", "std", "p50", "p90", "p99", "max"}
    assert set(r["cpu"]) >= {
        "governor",
        "freq_mhz_before",
        "freq_mhz_after",
        "temp_c_before",
        "temp_c_after",
        "throttled",
    }
    assert r["device"] == "bench-json" and r["arch"] and r["ts"].endswith("Z")
    assert r["threads"] == 1 and r["input"] == "random (seed 0)" and r["options"]["runs"] == 20
    assert [m["model"]["path"] for m in r["models"]] == [str(mobilenet), str(lstm)]
    for m in r["models"]:
        lat = m["latency_ms"]
        assert m["runs"] == 20 == len(m["samples_ms"])
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert min(m["samples_ms"]) == lat["min"] and max(m["samples_ms"]) == lat["max"]
        assert m["warmup_runs"] == 2 and m["first_inference_ms"] > 0 and m["init_ms"] > 0
    a, b = (m["latency_ms"]["p50"] for m in r["models"])
    assert r["models"][0]["ratio_vs_first"]["p50"] == 1.0
    assert abs(r["models"][1]["ratio_vs_first"]["p50"] - b / a) < 1e-3
    assert json.loads((cli_json["dir"] / "report.json").read_text()) == r


def test_plot_file(cli_json: dict[str, Any]) -> None:
    png = cli_json["dir"] / "plot.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 15_000
    assert f"plot written to {png}" in cli_json["stderr"]


def test_table_of_the_report(cli_json: dict[str, Any]) -> None:
    text = table(cli_json["report"])
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert lines[header].split()[:4] == ["model", "runtime", "delegate", "init"]
    rows = lines[header + 2 : header + 4]
    assert rows[0].startswith("mobilenet_v1_0.25_128_quant.tflite") and rows[1].startswith("keras_lstm")
    p50 = cli_json["report"]["models"][1]["latency_ms"]["p50"]
    # ..., "p50 x first", then the task and its postprocess p50
    assert f"{p50:.3f}" in rows[1].split() and rows[0].split()[-3] == "1.00"
    assert rows[0].split()[-2] == "classifier"


def _reference(report: dict[str, Any], tmp: Path, scale: float) -> Path:
    ref = json.loads(json.dumps(report))
    for m in ref["models"]:
        m["latency_ms"]["p50"] *= scale
    ref["note"] = "test reference"
    path = tmp / f"ref_{scale}.json"
    path.write_text(json.dumps(ref))
    return path


def test_reference_pass_and_regression(
    cli_json: dict[str, Any], mobilenet: Path, coral: Path, tmp_path: Path
) -> None:
    # 10x slower than recorded cannot be within +30 %, 10x faster cannot be a regression: no noise flips them.
    ok = bench_cli(
        mobilenet,
        *QUICK,
        "--reference",
        _reference(cli_json["report"], tmp_path, 10.0),
        "--input",
        coral / "cat.bmp",
    )
    assert ok.returncode == 0, ok.stderr
    assert "mobilenet_v1_0.25_128_quant.tflite: p50" in ok.stderr and " ok" in ok.stderr
    assert "reference note: test reference" in ok.stderr
    assert "p50 x first" in ok.stdout and "mobilenet_v1_0.25_128_quant.tflite" in ok.stdout  # the table
    assert f"input {coral / 'cat.bmp'}" in ok.stdout
    bad = bench_cli(
        mobilenet,
        *QUICK,
        "--json",
        "--reference",
        _reference(cli_json["report"], tmp_path, 0.1),
        "--tolerance",
        "0.3",
    )
    assert bad.returncode == 1, bad.stderr
    assert "REGRESSION" in bad.stderr and json.loads(bad.stdout)["models"]


def test_bad_inputs_exit_2(mobilenet: Path, lstm: Path, tmp_path: Path) -> None:
    missing = bench_cli(tmp_path / "nope.tflite", *QUICK)
    assert missing.returncode == 2 and "model file not found" in missing.stderr and "fix:" in missing.stderr
    runs = bench_cli(mobilenet, "--runs", "zero")
    assert runs.returncode == 2 and "--runs must be an integer >= 1; received 'zero'" in runs.stderr
    window = bench_cli(mobilenet, "--min-secs", "5", "--max-secs", "1")
    assert window.returncode == 2 and "bad options: min_secs: must not exceed max_secs (1.0)" in window.stderr
    url = bench_cli(mobilenet, "--publish", "localhost:1883")
    assert url.returncode == 2 and "--publish must be a broker URL" in url.stderr
    (tmp_path / "ref.json").write_text("{not json")
    ref = bench_cli(mobilenet, "--reference", tmp_path / "ref.json")
    assert ref.returncode == 2 and "is not JSON" in ref.stderr
    (tmp_path / "other.json").write_text(
        json.dumps(
            {"models": [{"model": {"path": "/x/other.tflite", "sha256": "0"}, "latency_ms": {"p50": 1.0}}]}
        )
    )
    other = bench_cli(mobilenet, *QUICK, "--reference", tmp_path / "other.json")
    assert other.returncode == 2 and "none of the benchmarked models is in the reference" in other.stderr
