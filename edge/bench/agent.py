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
from typing import Annotated, Any

from msgspec import Meta

from edge.bench.core import BenchOptions, min_secs_window
from edge.bench.runner import benchmark
from edge.errors import InputError
from edge.model.runtime import LoadedModel
from edge.validation import Problem, Record, decode, problems

# Command keys that are the envelope, not benchmark parameters.
ENVELOPE_KEYS = frozenset({"id", "action"})


class BenchParamsError(InputError):
    """The ``bench`` command's parameters are invalid."""


class AgentBenchParams(Record, frozen=True):
    """Parameters of the agent's ``bench`` command (all optional)."""

    runs: Annotated[int, Meta(ge=1, le=100_000, description="minimum number of timed invokes")] = 50
    warmup: Annotated[int, Meta(ge=0, le=10_000, description="minimum number of warm-up invokes")] = 1
    min_secs: Annotated[
        float, Meta(ge=0, le=60, description="minimum duration of the timed runs, seconds")
    ] = 1.0
    max_secs: Annotated[
        float,
        Meta(
            gt=0,
            le=120,
            description="maximum duration of the timed runs, seconds; the agent serves no inference meanwhile",
        ),
    ] = 10.0
    warmup_min_secs: Annotated[
        float, Meta(ge=0, le=10, description="minimum duration of the warm-up, seconds")
    ] = 0.5
    seed: Annotated[int, Meta(ge=0, description="seed of the random inputs")] = 0

    def cross_check(self) -> list[Problem]:
        return min_secs_window(self.min_secs, self.max_secs)


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
    found = problems(AgentBenchParams, given, strict=False)
    if found:
        raise BenchParamsError(
            "invalid bench parameters: " + "; ".join(f"{k}: {m} (received {v!r})" for k, v, m in found),
            "allowed: runs (1-100000), warmup (0-10000), min_secs (0-60), max_secs (0-120, >= min_secs), "
            "warmup_min_secs (0-10), seed (>= 0)",
        )
    return decode(AgentBenchParams, given, strict=False)


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
