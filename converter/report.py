"""The conversion report: a JSON contract other tools read, and a short table for people."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from edge.digest import sha256_hex


def file_figures(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return {
        "path": str(path),
        "size_bytes": len(data),
        "gzip_size_bytes": len(gzip.compress(data, 9)),
        "sha256": sha256_hex(data),
    }


def report_path(output: Path) -> Path:
    return output.with_name(output.stem + ".report.json")


def write(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")


def _kb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f} KiB"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f} %"


def table(report: dict[str, Any]) -> str:
    inp, out, q, m = report["input"], report["output"], report["quantization"], report["metrics"]
    lines = [
        f"input        {inp['path']} ({inp['format']}, {inp['parameters'] or '?'} parameters, "
        f"{_kb(inp['size_bytes'])})",
        f"output       {out['path']}",
        f"size         {_kb(out['size_bytes'])} (gzip {_kb(out['gzip_size_bytes'])})",
        f"quantization {q['mode']} (input {q['input_dtype']}, output {q['output_dtype']})",
    ]
    for step in report["steps"]:
        extra = ""
        if step["name"] == "prune":
            extra = f" sparsity {step['sparsity']['achieved']:.3f} (target {step['sparsity']['target']})"
        lines.append(f"step         {step['name']:<13} {step['seconds']:7.1f} s{extra}")
    if m["tflite_accuracy"] is not None:
        lines.append(
            f"accuracy     float {_pct(m['float_accuracy'])} -> tflite {_pct(m['tflite_accuracy'])} "
            f"(drop {m['accuracy_drop']:.2f} pp, top-1 agreement {_pct(m['top1_agreement'])}, "
            f"SQNR {m['output_sqnr_db']} dB, {m['eval_samples']} samples)"
        )
    elif m["top1_agreement"] is not None:
        lines.append(
            f"agreement    top-1 {_pct(m['top1_agreement'])}, SQNR {m['output_sqnr_db']} dB (no labels)"
        )
    else:
        lines.append("accuracy     not measured (no --data)")
    for name, c in report["compatibility"].items():
        lines.append(f"{name:<15}{'ok' if c['ok'] else 'NO'}  {c['reason']}")
    if report.get("candidates"):
        lines.append("candidates   (smallest within --max-accuracy-drop is kept)")
        for c in report["candidates"]:
            mark = "*" if c.get("chosen") else " "
            if c.get("error"):
                lines.append(f"    {c['name']:<10} not built: {c['error']}")
                continue
            lines.append(
                f"  {mark} {c['name']:<10} {_kb(c['size_bytes']):>12}  acc {_pct(c['tflite_accuracy'])}  "
                f"drop {c['accuracy_drop']} pp  {'within' if c['within_budget'] else 'over'} budget"
            )
    for w in report.get("warnings", []):
        lines.append(f"warning      {w}")
    for h in report.get("hints", []):
        lines.append(f"hint         {h}")
    lines.append(f"report       {out['report_path']}")
    return "\n".join(lines)
