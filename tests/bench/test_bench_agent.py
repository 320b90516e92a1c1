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
        ({"runs": 0}, "runs: Expected `int` >= 1 (received 0)"),
        ({"runs": "many"}, "runs: Expected `int`, got `str` (received 'many')"),
        ({"max_secs": 1000}, "max_secs: Expected `float` <= 120"),
        ({"max_secs": float("nan")}, "max_secs: Expected `float` > 0"),
        ({"min_secs": float("inf")}, "min_secs: Expected `float` <= 60"),
        ({"seed": float("nan")}, "seed: Expected `int`, got `float`"),
        ({"min_secs": 5, "max_secs": 2}, "min_secs: must not exceed max_secs (2.0) (received 5.0)"),
        ({"rnus": 10}, "rnus: unknown key (did you mean 'runs'?"),
        (["runs", 10], "must be a JSON object"),
    ],
)
def test_bad_parameters_are_explained(mobilenet: Path, params: object, needle: str) -> None:
    m = load_model(mobilenet)
    with pytest.raises(BenchParamsError) as err:
        run_for_agent(m, params)  # type: ignore[arg-type]
    assert needle in str(err.value) and err.value.fix
