"""The fleet's inventory from what the broker retains: every device's availability and status.

Each agent retains its availability (``online``; the broker's last will says ``offline``) and its status
(model, runtime, board). A subscriber gets all of them right after subscribing, from any broker of a
bridged or clustered set that carries ``edge/#``, so one short connection lists the whole fleet. Metrics
are not retained: spool depth is known for the devices whose metrics message arrives while we listen.

The messages go through :class:`edge.watch.state.Fleet`, so ``edge-fleet ls`` validates and reads them
exactly as ``edge-watch`` does.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from edge.contract import schemas
from edge.fleet.connect import connect_subscribed
from edge.transport.url import BrokerURL
from edge.watch.state import Fleet

# retained on every agent (availability, status); metrics ride along when they happen to arrive
KINDS = ("availability", "status", "metrics")


def parse_ts(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return (
            datetime.strptime(ts.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
        )
    except ValueError:
        try:
            return (
                datetime.strptime(ts.rstrip("Z"), "%Y-%m-%dT%H:%M:%S")
                .replace(tzinfo=timezone.utc)
                .timestamp()
            )
        except ValueError:
            return None


@dataclass(frozen=True)
class Collected:
    fleet: Fleet
    retained: int  # retained messages received
    seconds: float  # from connect to the end of collection


def collect(
    broker: BrokerURL,
    *,
    prefix: str = "edge",
    settle_s: float = 0.5,
    wait_s: float = 10.0,
    connect_timeout_s: float = 10.0,
) -> Collected:
    """Subscribe, take the retained messages, stop once none came for ``settle_s`` (or at ``wait_s``).

    The broker sends retained messages right after the SUBACK, back to back: a quiet gap means it is done.
    Live messages (retain flag clear) never extend the wait: a busy fleet would otherwise never settle."""
    fleet = Fleet(prefix=prefix)
    lock = threading.Lock()
    last = [0.0]
    retained = [0]

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        fleet.ingest(msg.topic, msg.payload, retained=bool(msg.retain))
        if msg.retain:
            with lock:
                retained[0] += 1
                last[0] = time.monotonic()

    started = time.monotonic()
    client = connect_subscribed(
        broker,
        f"edge-fleet-{uuid.uuid4().hex[:8]}",
        [(schemas.topic_for(k, "+", prefix), 1) for k in KINDS],
        on_message,
        timeout_s=connect_timeout_s,
    )
    with lock:  # the quiet gap counts from the SUBACK at the latest
        last[0] = max(last[0], time.monotonic())
    try:
        deadline = started + wait_s
        while True:
            now = time.monotonic()
            with lock:
                quiet_since = last[0]
            if now - quiet_since >= settle_s or now >= deadline:
                break
            time.sleep(min(0.05, settle_s / 4))
    finally:
        client.disconnect()
        client.loop_stop()
    return Collected(fleet, retained[0], time.monotonic() - started)


def rows(collected: Collected, now: float | None = None) -> list[dict[str, Any]]:
    """One row per device, sorted by id: what ``edge-fleet ls`` prints (and its --json)."""
    now = time.time() if now is None else now
    out = []
    for d in collected.fleet.snapshot(now)["devices"]:
        seen = [t for t in (parse_ts(d["status_ts"]), parse_ts(d["metrics_ts"])) if t is not None]
        last_seen = max(seen) if seen else None
        out.append(
            {
                "device": d["device"],
                "online": d["availability"] == "online",
                "availability": d["availability"],
                "model": d["model"],
                "model_version": d["model_version"],
                "model_sha256": d["model_sha256"],
                "model_kind": d["model_kind"],
                "runtime": d["runtime"],
                "delegate": d["delegate"],
                "arch": d["arch"],
                "board": d["board"],
                "agent_version": d["agent_version"],
                "last_seen": None
                if last_seen is None
                else datetime.fromtimestamp(last_seen, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "last_seen_ago_s": None if last_seen is None else round(max(0.0, now - last_seen), 1),
                "spool_depth": d["spool_depth"],
            }
        )
    return out
