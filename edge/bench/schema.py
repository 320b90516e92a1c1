"""JSON Schema (draft 2020-12) of the edge-bench report: the keys docs/bench.md promises.

The MQTT contract's ``edge/contract/schemas/bench.json`` fixes only the envelope
(``schema``, ``device``, ``ts``); this is the body. Keys are only ever added,
so objects stay open (no ``additionalProperties: false``).
"""

from __future__ import annotations

from typing import Any

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_MS = {"type": "number", "minimum": 0}

MODEL_RECORD: dict[str, Any] = {
    "type": "object",
    "required": [
        "model",
        "runtime",
        "delegate",
        "threads",
        "init_ms",
        "first_inference_ms",
        "warmup_runs",
        "warmup_mean_ms",
        "runs",
        "latency_ms",
        "inferences_per_s",
        "rss_delta_mb",
        "ratio_vs_first",
    ],
    "properties": {
        "model": {
            "type": "object",
            "required": ["path", "size_bytes", "sha256"],
            "properties": {
                "path": {"type": "string"},
                "requested_path": {"type": "string"},
                "size_bytes": {"type": "integer", "minimum": 0},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            },
        },
        "runtime": {
            "type": "object",
            "required": ["name", "version"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
        },
        "delegate": {"type": "string"},
        "threads": {"type": ["integer", "null"], "minimum": 1},
        "notes": {"type": "array", "items": {"type": "string"}},
        "input": {"type": "string"},
        "init_ms": _MS,
        "first_inference_ms": _MS,
        "warmup_runs": {"type": "integer", "minimum": 0},
        "warmup_mean_ms": {"type": ["number", "null"], "minimum": 0},
        "runs": {"type": "integer", "minimum": 1},
        "elapsed_s": _MS,
        "stopped_by": {"enum": ["runs", "min_secs", "max_secs"]},
        "latency_ms": {
            "type": "object",
            "required": ["min", "mean", "std", "p50", "p90", "p99", "max"],
            "properties": {k: _MS for k in ("min", "mean", "std", "p50", "p90", "p99", "max")},
        },
        "inferences_per_s": _MS,
        "rss_delta_mb": _NUM_OR_NULL,
        "ratio_vs_first": {
            "type": "object",
            "required": ["p50", "mean", "inferences_per_s"],
            "properties": {"p50": _NUM_OR_NULL, "mean": _NUM_OR_NULL, "inferences_per_s": _NUM},
        },
        "samples_ms": {"type": "array", "items": _MS},
        "postprocess": {
            "type": ["object", "null"],
            "required": ["task", "decoder"],
            "properties": {
                "task": {"type": ["string", "null"]},
                "decoder": {"type": ["string", "null"]},
                "runs": {"type": "integer", "minimum": 1},
                "latency_ms": {
                    "type": "object",
                    "required": ["min", "p50", "mean", "max"],
                    "properties": {k: _MS for k in ("min", "p50", "mean", "max")},
                },
                "error": {"type": "string"},
            },
        },
    },
}

REPORT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://edge-ml-toolkit.invalid/schemas/v1/bench-report.json",
    "title": "edge-bench report",
    "description": "The first model's keys at the top level, every model of the run under `models`.",
    "allOf": [{"$ref": "#/$defs/model_record"}],
    "type": "object",
    "required": [
        "schema",
        "device",
        "ts",
        "board",
        "arch",
        "cpu",
        "edgetpu",
        "peak_rss_mb",
        "options",
        "models",
    ],
    "properties": {
        "schema": {"const": 1},
        "device": {"type": "string", "minLength": 1},
        "ts": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"},
        "board": {"type": ["string", "null"]},
        "arch": {"type": "string"},
        "cpu": {
            "type": "object",
            "required": [
                "governor",
                "freq_mhz_before",
                "freq_mhz_after",
                "temp_c_before",
                "temp_c_after",
                "throttled",
            ],
            "properties": {
                "governor": {"type": ["string", "null"]},
                "freq_mhz_before": _NUM_OR_NULL,
                "freq_mhz_after": _NUM_OR_NULL,
                "temp_c_before": _NUM_OR_NULL,
                "temp_c_after": _NUM_OR_NULL,
                "throttled": {"type": ["string", "null"], "pattern": "^0x[0-9a-fA-F]+$"},
                "throttled_flags": {"type": ["array", "null"], "items": {"type": "string"}},
            },
        },
        "edgetpu": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["temp_c_before", "temp_c_after"],
                    "properties": {"temp_c_before": _NUM_OR_NULL, "temp_c_after": _NUM_OR_NULL},
                },
            ]
        },
        "peak_rss_mb": _MS,
        "options": {
            "type": "object",
            "required": ["runs", "min_secs", "max_secs", "warmup", "warmup_min_secs"],
        },
        "models": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/model_record"}},
        "note": {"type": "string"},
        "source": {"type": "string"},
    },
    "$defs": {"model_record": MODEL_RECORD},
}
