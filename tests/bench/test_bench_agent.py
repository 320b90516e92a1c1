"""edge.bench.run_for_agent: what the agent's `bench` command calls on its loaded model."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.bench import BenchParamsError, run_for_agent
from edge.model.runtime import load_model


def test_report_of_the_loaded_model(mobilenet: Path) -> None:
    m = load_model(mobilenet)
    report = run_for_agent(
        m,
        {
            "id": "c1",
            "action": "bench",
            "runs": 15,
            "warmup": 2,
            "min_secs": 0,
            "max_secs": 5,
            "warmup_min_secs": 0,
        },
        device="pi-7",
    )
    assert report["device"] == "pi-7" and report["schema"] == 1 and report["source"] == "agent"
    assert report["ts"].endswith("Z") and report["model"]["sha256"] == m.sha256
    assert report["runs"] == 15 and report["warmup_runs"] == 2
    assert report["options"]["max_secs"] == 5
    # The agent's interpreter still works for predictions afterwards.
    m.interpreter.invoke()


@pytest.mark.parametrize(
    "params,needle",
    [
        ({"runs": 0}, "runs: Input should be greater than or equal to 1 (received 0)"),
        ({"runs": "many"}, "runs: Input should be a valid integer"),
        ({"max_secs": 1000}, "max_secs: Input should be less than or equal to 120"),
        ({"min_secs": 5, "max_secs": 2}, "min_secs (5.0) must not exceed max_secs (2.0)"),
        ({"rnus": 10}, "rnus: Extra inputs are not permitted"),
        (["runs", 10], "must be a JSON object"),
    ],
)
def test_bad_parameters_are_explained(mobilenet: Path, params: object, needle: str) -> None:
    m = load_model(mobilenet)
    with pytest.raises(BenchParamsError) as err:
        run_for_agent(m, params)  # type: ignore[arg-type]
    assert needle in str(err.value) and err.value.fix
