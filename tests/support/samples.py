"""Valid payloads of every kind, written from docs/mqtt.md (not from the agent's code), to test the
subscriber side on its own; the agent-integration tests check the real agent's messages instead."""

from __future__ import annotations

import copy
from typing import Any

from edge.contract.messages import utc_iso

SHA = "ab" * 32


def envelope(device: str) -> dict[str, Any]:
    return {"schema": 1, "device": device, "ts": utc_iso()}


def status(device: str = "pi-1", kind: str = "classifier") -> dict[str, Any]:
    tensor = {
        "name": "input",
        "shape": [1, 28, 28, 1],
        "dtype": "int8",
        "quantization": {"scale": 0.0039, "zero_point": -128},
    }
    return {
        **envelope(device),
        "agent_version": "0.1.0",
        "started_at": utc_iso(),
        "runtime": {"name": "ai-edge-litert", "version": "2.3.0"},
        "delegate": "cpu",
        "notes": [],
        "model_path": "/models/digits_int8.tflite",
        "model_sha256": SHA,
        "model": {
            "path": "/models/digits_int8.tflite",
            "sha256": SHA,
            "size_bytes": 24000,
            "kind": kind,
            "inputs": [tensor],
            "outputs": [{**tensor, "name": "out", "shape": [1, 10]}],
        },
        "arch": "aarch64",
        "board": "Raspberry Pi 4 Model B Rev 1.4",
        "hostname": device,
        "python": "3.11.2",
        "threads": 4,
        "source": "/data/in",
    }


def prediction(
    device: str = "pi-1",
    seq: int = 1,
    total: float = 4.2,
    label: str = "seven",
    score: float = 0.91,
    **extra: Any,
) -> dict[str, Any]:
    return {
        **envelope(device),
        "seq": seq,
        "source": f"img{seq}.png",
        "model_sha256": SHA,
        "latency_ms": {"preprocess": 0.5, "inference": total - 1.0, "postprocess": 0.5, "total": total},
        "kind": "classifier",
        "top_k": [{"index": 7, "label": label, "score": score}, {"index": 1, "label": "one", "score": 0.05}],
        **extra,
    }


def detection(device: str = "pi-1", seq: int = 1) -> dict[str, Any]:
    return {
        **envelope(device),
        "seq": seq,
        "source": "cam",
        "model_sha256": SHA,
        "latency_ms": {"preprocess": 1, "inference": 10, "postprocess": 1, "total": 12},
        "kind": "detector",
        "detections": [{"index": 0, "label": "person", "score": 0.8, "box": [0.1, 0.2, 0.5, 0.6]}],
    }


def generic(device: str = "pi-1", seq: int = 1) -> dict[str, Any]:
    return {
        **envelope(device),
        "seq": seq,
        "source": "x.npy",
        "model_sha256": SHA,
        "latency_ms": {"preprocess": 0, "inference": 1, "postprocess": 0, "total": 1},
        "kind": "generic",
        "outputs": [{"name": "y", "shape": [1, 3], "values": [[1, 2, 3]], "truncated": False}],
    }


def metrics(device: str = "pi-1", p50: float | None = 4.0, rate: float = 2.5) -> dict[str, Any]:
    return {
        **envelope(device),
        "window_s": 10.0,
        "inferences": 25,
        "inferences_per_s": rate,
        "latency_ms": {
            "p50": p50,
            "p90": None if p50 is None else p50 * 1.5,
            "p99": None if p50 is None else p50 * 2,
        },
        "rss_mb": 80.5,
        "cpu_temp_c": 51.2,
        "spool_depth": 3,
        "dropped": 0,
        "errors": 1,
    }


def error(device: str = "pi-1") -> dict[str, Any]:
    return {
        **envelope(device),
        "source": "broken.jpg",
        "error": "cannot decode image: truncated JPEG",
        "fix": "send a complete JPEG/PNG/BMP",
    }


def cmd_result(device: str = "pi-1", ok: bool = True) -> dict[str, Any]:
    base = {**envelope(device), "id": "42", "action": "ping", "ok": ok}
    return {**base, "result": {"pong": True}} if ok else {**base, "error": "unknown action 'fly'"}


def bench(device: str = "pi-1") -> dict[str, Any]:
    return {**envelope(device), "model": "digits_int8.tflite", "runs": 50, "latency_ms": {"p50": 3.1}}


def audit(device: str = "pi-1") -> dict[str, Any]:
    return {
        **envelope(device),
        "topic": f"edge/{device}/cmd",
        "action": "ping",
        "id": "42",
        "outcome": "done",
        "ok": True,
        "payload_bytes": 31,
        "payload_sha256": "0" * 64,
    }


def shadow(device: str = "pi-1", agreement: float | None = 0.97, inputs: int = 120) -> dict[str, Any]:
    return {
        **envelope(device),
        "candidate_sha256": "cd" * 32,
        "active_sha256": SHA,
        "task": "classifier",
        "inputs": inputs,
        "skipped": 3,
        "agreement": agreement,
        "metric": "top1",
        "latency_ms": {"active": {"p50": 3.1, "p99": 4.0}, "candidate": {"p50": 3.4, "p99": 5.2}},
        "errors": 0,
        "window_s": 10.0,
    }


VALID: dict[str, Any] = {
    "availability": lambda: "online",
    "status": status,
    "predictions": prediction,
    "errors": error,
    "metrics": metrics,
    "cmd_result": cmd_result,
    "bench": bench,
    "audit": audit,
    "shadow": shadow,
}


def valid(kind: str) -> Any:
    return copy.deepcopy(VALID[kind]())
