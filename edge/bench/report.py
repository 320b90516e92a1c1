"""The report as a table for people (the JSON is the report itself, see runner.BenchRun.report)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _name(m: Mapping[str, Any]) -> str:
    name = m["model"]["requested_path"].replace("\\", "/").rsplit("/", 1)[-1]
    return name + " (CPU twin)" if m["model"]["requested_path"] != m["model"]["path"] else name


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    # Left-align the text columns, right-align numbers.
    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def table(report: Mapping[str, Any]) -> str:
    """A readable summary: machine state, one line per model, ratios against the first."""
    cpu = report["cpu"]
    opts = report["options"]
    out = [
        f"edge-bench {report['version']} on {report['arch']} (board: {report['board'] or '-'}), "
        f"{cpu['count']} CPUs, governor {cpu['governor'] or '-'}",
        f"cpu MHz {_fmt(cpu['freq_mhz_before'], 0)} -> {_fmt(cpu['freq_mhz_after'], 0)}, "
        f"temp C {_fmt(cpu['temp_c_before'], 1)} -> {_fmt(cpu['temp_c_after'], 1)}, "
        f"throttled {cpu['throttled'] or '-'}"
        + (f" {','.join(cpu['throttled_flags'])}" if cpu.get("throttled_flags") else ""),
    ]
    if report.get("edgetpu"):
        tpu = report["edgetpu"]
        out.append(f"Edge TPU temp C {_fmt(tpu['temp_c_before'], 1)} -> {_fmt(tpu['temp_c_after'], 1)}")
    out.append(
        f"runs >= {opts['runs']} and >= {opts['min_secs']} s (max {opts['max_secs']} s), warm-up >= "
        f"{opts['warmup']} and >= {opts['warmup_min_secs']} s, input {report['input']}"
    )
    out.append("")
    header = [
        "model",
        "runtime",
        "delegate",
        "init ms",
        "first ms",
        "warm-up ms",
        "runs",
        "min",
        "p50",
        "p90",
        "p99",
        "max",
        "mean",
        "std",
        "inf/s",
        "rss+ MB",
        "p50 x first",
        "task",
        "post p50",
    ]
    rows = []
    for m in report["models"]:
        lat = m["latency_ms"]
        rows.append(
            [
                _name(m),
                m["runtime"]["name"] + (f"/{m['threads']}t" if m["threads"] else ""),
                m["delegate"],
                _fmt(m["init_ms"], 1),
                _fmt(m["first_inference_ms"]),
                _fmt(m["warmup_mean_ms"]),
                str(m["runs"]),
                *(_fmt(lat[k]) for k in ("min", "p50", "p90", "p99", "max", "mean", "std")),
                _fmt(m["inferences_per_s"], 1),
                _fmt(m["rss_delta_mb"], 1),
                _fmt(m["ratio_vs_first"]["p50"], 2),
                (m.get("postprocess") or {}).get("task") or "-",
                _fmt(((m.get("postprocess") or {}).get("latency_ms") or {}).get("p50")),
            ]
        )
    out += _table(header, rows, left=3)
    out.append("")
    out.append(
        f"latencies in ms (each invoke timed alone; post: the agent's postprocess for the task); peak RSS {_fmt(report['peak_rss_mb'], 1)} MB"
    )
    for m in report["models"]:
        for note in m["notes"]:
            out.append(f"note ({_name(m)}): {note}")
    return "\n".join(out)


def to_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False)
