"""The report's JSON Schema is valid, every real report follows it, and it catches a missing key."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edge.bench import run_for_agent
from edge.bench.schema import REPORT
from edge.model.runtime import load_model
from tests.support import ROOT

VALIDATOR = jsonschema.Draft202012Validator(REPORT)


def errors(report: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(report)]


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(REPORT)


def test_cli_agent_and_reference_reports_follow_it(cli_json: dict[str, Any], mobilenet: Path) -> None:
    assert errors(cli_json["report"]) == []
    agent = run_for_agent(load_model(mobilenet), {"runs": 5, "min_secs": 0, "warmup_min_secs": 0}, device="d")
    assert errors(json.loads(json.dumps(agent))) == []
    for ref in sorted((ROOT / "benchmarks" / "reference").glob("bench_*.json")):
        if "models" in json.loads(ref.read_text()):
            assert errors(json.loads(ref.read_text())) == [], ref


@pytest.mark.parametrize(
    "path,needle",
    [
        (("latency_ms", "p50"), "'p50' is a required property"),
        (("models", 1, "latency_ms", "p99"), "'p99' is a required property"),
        (("cpu", "throttled"), "'throttled' is a required property"),
        (("ts",), "'ts' is a required property"),
    ],
)
def test_a_missing_key_is_caught(cli_json: dict[str, Any], path: tuple[Any, ...], needle: str) -> None:
    report = copy.deepcopy(cli_json["report"])
    target = report
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    assert any(needle in e for e in errors(report)), errors(report)
