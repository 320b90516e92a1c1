"""Payload builders for the MQTT contract (docs/mqtt.md): one function per topic.

Every JSON payload carries ``schema``, ``device`` and ``ts``; keys listed in
docs/mqtt.md are a promise to subscribers, so they are built here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

SCHEMA = 1
ONLINE, OFFLINE = "online", "offline"


def utc_iso(epoch: float | None = None, timespec: str = "milliseconds") -> str:
    """UTC ISO 8601 with a ``Z``, e.g. ``2026-11-29T14:10:00.123Z``: every timestamp the toolkit writes.

    ``timespec`` as :meth:`datetime.isoformat` (``"microseconds"`` where two in a row must differ).
    """
    dt = datetime.now(timezone.utc) if epoch is None else datetime.fromtimestamp(epoch, tz=timezone.utc)
    return dt.isoformat(timespec=timespec).replace("+00:00", "Z")


def envelope(device: str, **fields: Any) -> dict[str, Any]:
    return {"schema": SCHEMA, "device": device, "ts": utc_iso(), **fields}


def status(
    device: str,
    *,
    agent_version: str,
    started_at: str,
    model: Mapping[str, Any],
    runtime: Mapping[str, Any],
    delegate: str,
    notes: Sequence[str],
    arch: str,
    board: str | None,
    hostname: str,
    python: str,
    threads: int | None,
    source: str,
    kind: str,
    task: Mapping[str, Any] | None = None,
    preprocess: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if task is not None:  # which task was chosen and why, and what the preprocessing does
        extra["task"] = dict(task)
    if preprocess is not None:
        extra["preprocess"] = dict(preprocess)
    return envelope(
        device,
        agent_version=agent_version,
        started_at=started_at,
        runtime=dict(runtime),
        delegate=delegate,
        notes=list(notes),
        model_path=model["path"],
        model_sha256=model["sha256"],
        model={**model, "kind": kind},
        arch=arch,
        board=board,
        hostname=hostname,
        python=python,
        threads=threads,
        source=source,
        **extra,
    )


def prediction(
    device: str,
    *,
    seq: int,
    source: str,
    model_sha256: str,
    latency_ms: Mapping[str, float],
    kind: str,
    result_key: str,
    result: Any,
    fields: Mapping[str, Any] | None = None,
    frame: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``fields``: every result key (e.g. detections + counts), else ``{result_key: result}``;
    ``frame``: for live sources, when the frame was captured (``captured_at``, ``age_ms`` at publish)."""
    extra: dict[str, Any] = dict(fields) if fields is not None else {result_key: result}
    if frame is not None:
        extra["frame"] = dict(frame)
    return envelope(
        device,
        seq=seq,
        source=source,
        model_sha256=model_sha256,
        latency_ms={k: round(v, 3) for k, v in latency_ms.items()},
        kind=kind,
        **extra,
    )


def error(device: str, *, source: str, error: str, fix: str) -> dict[str, Any]:
    return envelope(device, source=source, error=error, fix=fix)


def metrics(device: str, **fields: Any) -> dict[str, Any]:
    return envelope(device, **fields)


def cmd_result(
    device: str,
    *,
    id: Any,
    action: Any,
    ok: bool,
    result: Mapping[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": id, "action": action, "ok": ok}
    if ok:
        body["result"] = dict(result or {})
    else:
        body["error"] = error
    return envelope(device, **body)


def shadow_window(
    device: str,
    *,
    candidate_sha256: str,
    active_sha256: str,
    task: str,
    inputs: int,
    skipped: int,
    agreement: float | None,
    metric: str,
    latency_ms: Mapping[str, Mapping[str, float | None]],
    errors: int,
    window_s: float,
) -> dict[str, Any]:
    """One window of shadow mode (``edge/<device>/shadow``): the candidate against the active model."""
    return envelope(
        device,
        candidate_sha256=candidate_sha256,
        active_sha256=active_sha256,
        task=task,
        inputs=inputs,
        skipped=skipped,
        agreement=None if agreement is None else round(agreement, 6),
        metric=metric,
        latency_ms={k: dict(v) for k, v in latency_ms.items()},
        errors=errors,
        window_s=round(window_s, 3),
    )
