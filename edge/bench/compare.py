"""Compare a run with a committed reference for the same board, as pycoral's benchmarks do.

A model regresses when its p50 exceeds the reference's by more than
``tolerance`` (0.3 = 30 % slower). Models are matched by sha256, then by file
name; a reference with none of the run's models is an error, not a pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import InputError


@dataclass(frozen=True)
class Comparison:
    model: str
    p50_ms: float
    reference_p50_ms: float | None  # None: not in the reference
    ratio: float | None
    regressed: bool


def load_reference(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(
            f"cannot read --reference {path}: {exc}",
            "give a JSON report written by edge-bench --json (see benchmarks/reference/)",
        ) from exc
    except json.JSONDecodeError as exc:
        raise InputError(
            f"--reference {path} is not JSON: {exc}", "give a JSON report written by edge-bench --json"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise InputError(
            f"--reference {path} has no 'models' list", "give a JSON report written by edge-bench --json"
        )
    return data


def _name(m: Mapping[str, Any]) -> str:
    return str(m["model"]["path"]).replace("\\", "/").rsplit("/", 1)[-1]


def compare(
    report: Mapping[str, Any], reference: Mapping[str, Any], tolerance: float = 0.3
) -> list[Comparison]:
    if tolerance < 0:
        raise InputError(f"--tolerance must be >= 0; received {tolerance}", "e.g. --tolerance 0.3 for 30 %")
    by_sha = {m["model"]["sha256"]: m for m in reference["models"]}
    by_name = {_name(m): m for m in reference["models"]}
    out = []
    for m in report["models"]:
        ref = by_sha.get(m["model"]["sha256"]) or by_name.get(_name(m))
        p50 = float(m["latency_ms"]["p50"])
        if ref is None:
            out.append(Comparison(_name(m), p50, None, None, False))
            continue
        ref_p50 = float(ref["latency_ms"]["p50"])
        ratio = p50 / ref_p50 if ref_p50 > 0 else float("inf")
        out.append(Comparison(_name(m), p50, ref_p50, ratio, ratio > 1.0 + tolerance))
    if all(c.reference_p50_ms is None for c in out):
        raise InputError(
            "none of the benchmarked models is in the reference "
            f"(it has {', '.join(sorted(by_name)) or 'no models'})",
            "benchmark the reference's models, or record a new reference with --json",
        )
    return out


def summary(
    comparisons: list[Comparison],
    tolerance: float,
    reference: Mapping[str, Any],
    report: Mapping[str, Any] | None = None,
) -> str:
    lines = [
        f"reference: {reference.get('arch', '?')} / {reference.get('board') or '-'}, "
        f"recorded {reference.get('ts', '?')}, tolerance +{tolerance:.0%}"
    ]
    if report is not None and (report.get("arch"), report.get("board")) != (
        reference.get("arch"),
        reference.get("board"),
    ):
        lines.append(
            f"warning: this is {report.get('arch')} / {report.get('board') or '-'}, the reference is "
            "another machine: compare against benchmarks/reference/ of this board"
        )
    if reference.get("note"):
        lines.append(f"reference note: {reference['note']}")
    for c in comparisons:
        if c.reference_p50_ms is None:
            lines.append(f"  {c.model}: p50 {c.p50_ms:.3f} ms, not in the reference")
        else:
            verdict = "REGRESSION" if c.regressed else "ok"
            lines.append(
                f"  {c.model}: p50 {c.p50_ms:.3f} ms vs {c.reference_p50_ms:.3f} ms "
                f"(x{c.ratio:.2f}) {verdict}"
            )
    return "\n".join(lines)
