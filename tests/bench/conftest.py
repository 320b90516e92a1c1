from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.bench.bench_helpers import QUICK, bench_cli


@pytest.fixture(scope="session")
def mobilenet(coral: Path) -> Path:
    return coral / "mobilenet_v1_0.25_128_quant.tflite"


@pytest.fixture(scope="session")
def lstm(coral: Path) -> Path:
    return coral / "keras_lstm_mnist_ptq.tflite"


@pytest.fixture(scope="session")
def cli_json(tmp_path_factory: pytest.TempPathFactory, mobilenet: Path, lstm: Path) -> dict[str, Any]:
    """One real CLI run of two models with --json --plot --output --samples, read by several tests."""
    out = tmp_path_factory.mktemp("cli")
    proc = bench_cli(
        mobilenet,
        lstm,
        *QUICK,
        "--json",
        "--samples",
        "--plot",
        out / "plot.png",
        "--output",
        out / "report.json",
        "--device-id",
        "bench-json",
        "--threads",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    return {"report": json.loads(proc.stdout), "dir": out, "stdout": proc.stdout, "stderr": proc.stderr}
