"""The entry point the agent's ``bench`` command calls on the model it has loaded.

The agent passes the command's JSON (``{"id": ..., "action": "bench", "runs": 20, ...}``);
this validates the parameters, runs the same code as ``edge-bench`` on the
agent's interpreter (seeded random inputs) and returns the report, which the
agent publishes to ``<prefix>/<device>/bench`` and, as the command's result,
to ``cmd/result``. Limits are tighter than the CLI's because the agent does not
serve inferences while it benchmarks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.bench.core import BenchOptions
from edge.bench.runner import benchmark
from edge.errors import InputError
from edge.model.runtime import LoadedModel

# Command keys that are the envelope, not benchmark parameters.
ENVELOPE_KEYS = frozenset({"id", "action"})


class BenchParamsError(InputError):
    """The ``bench`` command's parameters are invalid."""


class AgentBenchParams(BaseModel):
    """Parameters of the agent's ``bench`` command (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runs: int = Field(default=50, ge=1, le=100_000, description="minimum number of timed invokes")
    warmup: int = Field(default=1, ge=0, le=10_000, description="minimum number of warm-up invokes")
    min_secs: float = Field(
        default=1.0, ge=0, le=60, description="minimum duration of the timed runs, seconds"
    )
    max_secs: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="maximum duration of the timed runs, seconds; the agent serves no inference meanwhile",
    )
    warmup_min_secs: float = Field(
        default=0.5, ge=0, le=10, description="minimum duration of the warm-up, seconds"
    )
    seed: int = Field(default=0, ge=0, description="seed of the random inputs")

    @model_validator(mode="after")
    def _window(self) -> AgentBenchParams:
        if self.min_secs > self.max_secs:
            raise ValueError(f"min_secs ({self.min_secs}) must not exceed max_secs ({self.max_secs})")
        return self


def parse_params(params: Mapping[str, Any] | None) -> AgentBenchParams:
    """Validate a command's parameters, raising :class:`BenchParamsError` that names each bad field."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise BenchParamsError(
            f"bench parameters must be a JSON object; received {type(params).__name__}",
            'send e.g. {"action": "bench", "runs": 50, "max_secs": 10}',
        )
    given = {k: v for k, v in params.items() if k not in ENVELOPE_KEYS}
    try:
        return AgentBenchParams.model_validate(given, strict=False)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e["loc"]) or "parameters"
            got = f" (received {e['input']!r})" if "input" in e and where != "parameters" else ""
            problems.append(f"{where}: {e['msg']}{got}")
        raise BenchParamsError(
            "invalid bench parameters: " + "; ".join(problems),
            "allowed: runs (1-100000), warmup (0-10000), min_secs (0-60), max_secs (0-120, >= min_secs), "
            "warmup_min_secs (0-10), seed (>= 0)",
        ) from exc


def run_for_agent(
    loaded: LoadedModel, params: Mapping[str, Any] | None = None, device: str | None = None
) -> dict[str, Any]:
    """Benchmark the agent's loaded model and return the report (``device`` fills the report's ``device``)."""
    p = parse_params(params)
    options = BenchOptions(
        runs=p.runs,
        warmup=p.warmup,
        min_secs=p.min_secs,
        max_secs=p.max_secs,
        warmup_min_secs=p.warmup_min_secs,
        seed=p.seed,
    )
    report = benchmark(loaded, options).report(device=device)
    report["source"] = "agent"
    return report
