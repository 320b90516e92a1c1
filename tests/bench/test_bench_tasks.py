"""edge-bench times the agent's own postprocess per task, apart from the invokes (real models)."""

from __future__ import annotations

from pathlib import Path

import jsonschema

from edge.bench import BenchOptions, benchmark
from edge.bench.report import table
from edge.bench.schema import REPORT
from edge.model.runtime import load_model

DATA = Path(__file__).resolve().parents[1] / "data"
QUICK = BenchOptions(runs=3, min_secs=0, warmup=0, warmup_min_secs=0)


def test_postprocess_is_timed_per_task() -> None:
    for name, task, decoder in [
        ("movenet_single_pose_lightning_ptq.tflite", "pose", "movenet_single"),
        ("deeplabv3_mnv2_pascal_quant.tflite", "segmentation", "class_map"),
    ]:
        run = benchmark(load_model(DATA / name, threads=1), QUICK)
        report = run.report(device="t")
        post = report["models"][0]["postprocess"]
        assert (post["task"], post["decoder"]) == (task, decoder)
        lat = post["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["max"] and post["runs"] == 20
        jsonschema.validate(report, REPORT)
        assert task in table(report)
