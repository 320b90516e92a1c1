from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from edge.contract import schemas
from edge.contract.schemas import SchemaError
from tests.support import samples

SCHEMA_DIR = Path(schemas.__file__).parent


def test_every_kind_ships_a_valid_draft_2020_12_schema() -> None:
    files = sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))
    assert files == sorted(schemas.KINDS)
    for kind in schemas.KINDS:
        jsonschema.Draft202012Validator.check_schema(schemas.schema(kind))


@pytest.mark.parametrize("kind", schemas.KINDS)
@pytest.mark.parametrize("builtin", [False, True], ids=["jsonschema", "builtin"])
def test_documented_examples_are_valid(kind: str, builtin: bool) -> None:
    assert schemas.problems(kind, samples.valid(kind), builtin=builtin) == []


def test_detector_and_generic_predictions_are_valid() -> None:
    for payload in (samples.detection(), samples.generic(), samples.prediction(historical=True)):
        assert schemas.problems("predictions", payload) == []
        assert schemas.problems("predictions", payload, builtin=True) == []


def _broken() -> list[tuple[str, object, str]]:
    """(kind, payload, a word the problem must mention)"""
    out: list[tuple[str, object, str]] = []

    def mut(kind: str, word: str, change):  # type: ignore[no-untyped-def]
        p = samples.valid(kind)
        change(p)
        out.append((kind, p, word))

    mut("predictions", "seq", lambda p: p.pop("seq"))
    mut("predictions", "seq", lambda p: p.update(seq=True))  # a bool is not an integer in JSON
    mut("predictions", "seq", lambda p: p.update(seq=-1))
    mut("predictions", "total", lambda p: p["latency_ms"].pop("total"))
    mut("predictions", "top_k", lambda p: p.pop("top_k"))  # a classifier must say what it saw
    mut("predictions", "kind", lambda p: p.update(kind="regressor"))
    mut("predictions", "schema", lambda p: p.update(schema=2))
    mut("predictions", "ts", lambda p: p.update(ts="yesterday"))
    mut("predictions", "score", lambda p: p["top_k"][0].update(score="high"))
    mut("status", "delegate", lambda p: p.update(delegate="gpu"))
    mut("status", "model_sha256", lambda p: p.update(model_sha256="xyz"))
    mut("status", "quantization", lambda p: p["model"]["inputs"][0].pop("quantization"))
    mut("metrics", "cpu_temp_c", lambda p: p.pop("cpu_temp_c"))
    mut("metrics", "spool_depth", lambda p: p.update(spool_depth=1.5))
    mut("errors", "fix", lambda p: p.pop("fix"))
    mut("cmd_result", "error", lambda p: p.update(ok=False))  # a failure must say why
    mut("cmd_result", "result", lambda p: p.pop("result"))
    out.append(("availability", "maybe", "maybe"))
    out.append(("status", [1, 2], "object"))
    out.append(("bench", {"schema": 1}, "device"))
    return out


@pytest.mark.parametrize("kind,payload,word", _broken())
@pytest.mark.parametrize("builtin", [False, True], ids=["jsonschema", "builtin"])
def test_broken_payloads_are_rejected_with_the_culprit_named(
    kind: str, payload: object, word: str, builtin: bool
) -> None:
    found = schemas.problems(kind, payload, builtin=builtin)
    assert found, f"{kind} accepted {payload!r}"
    assert word in " ".join(found)


def test_validate_raises_an_actionable_error() -> None:
    p = samples.prediction()
    del p["latency_ms"]
    with pytest.raises(SchemaError) as err:
        schemas.validate("predictions", p)
    assert "latency_ms" in err.value.what and "schemas/predictions.json" in err.value.fix
    schemas.validate("predictions", samples.prediction())  # no raise
    with pytest.raises(SchemaError, match="unknown payload kind"):
        schemas.validate("nope", {})


def test_additions_keep_the_schema_version() -> None:
    p = samples.metrics()
    p["gpu_temp_c"] = 40.0  # a future key must not break today's subscribers
    assert schemas.problems("metrics", p) == [] and schemas.problems("metrics", p, builtin=True) == []


def test_topics_map_to_kinds() -> None:
    assert schemas.split_topic("edge/pi-1/cmd/result") == ("pi-1", "cmd_result")
    assert schemas.split_topic("site/a/pi/status", prefix="site/a") == ("pi", "status")
    assert schemas.split_topic("edge/pi-1/infer") is None  # an input, not something the agent says
    assert schemas.split_topic("edge/pi-1/cmd") is None
    assert schemas.split_topic("other/pi-1/status") is None
    for kind in schemas.KINDS:
        assert schemas.split_topic(schemas.topic_for(kind, "d")) == ("d", kind)


def test_schemas_are_package_data() -> None:
    # pyproject ships edge/contract/schemas/*.json; the module must find them through importlib.resources
    assert json.loads((SCHEMA_DIR / "predictions.json").read_text())["title"].endswith("predictions")
