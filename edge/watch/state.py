"""The fleet as seen from the broker: one model fed by MQTT messages.

The terminal table, ``--json``, ``--csv`` and the web dashboard all read this
one model, so they can never disagree. Every message is checked against the
contract (edge/schemas) before it touches the model; a message that fails is
counted and remembered as :class:`Malformed`, never raised: one broken
publisher must not take the fleet view down.
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge.contract import schemas
from edge.contract import thumbnail as thumbnail_format
from edge.errors import EdgeError
from edge.transport.topics import split_binary_topic
from edge.watch.drift import DriftTracker

LATENCY_POINTS = 300  # per device, for the chart and the local percentiles
RATE_WINDOW_S = 10.0
# What the dashboard may hold and serve per device (``/api/frame/<device>``), whatever publishers send:
# one thumbnail of at most this many bytes (the agent caps its own at 64 KiB by default) ...
THUMBNAIL_MAX_BYTES = 256 * 1024
# ... and the results drawn over it, cut to these many items, labels to LABEL_CHARS characters
OVERLAY_ITEMS = {"detections": 100, "poses": 10, "keypoints": 33, "segments": 8, "top_k": 5}
LABEL_CHARS = 48
PAIR_WINDOW = 32  # predictions remembered per device, to pair with a thumbnail arriving before or after


@dataclass(frozen=True)
class Message:
    """A message that follows the contract."""

    topic: str
    device: str
    kind: str
    payload: Any
    retained: bool
    received: float  # epoch seconds, when this process got it

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "device": self.device,
            "kind": self.kind,
            "retained": self.retained,
            "received": round(self.received, 3),
            "payload": self.payload,
        }


@dataclass(frozen=True)
class Malformed:
    """A message on an agent topic that does not follow the contract."""

    topic: str
    reason: str
    received: float

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "reason": self.reason, "received": round(self.received, 3)}


@dataclass(frozen=True)
class Thumbnail:
    """A frame the agent published with ``--publish-thumbnail`` (edge.contract.thumbnail)."""

    topic: str
    device: str
    jpeg: bytes
    seq: int
    ts: str
    width: int
    height: int
    received: float

    def describe(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "width": self.width,
            "height": self.height,
            "bytes": len(self.jpeg),
        }


def parse_thumbnail(
    topic: str, raw: bytes, *, prefix: str = "edge", now: float | None = None
) -> Thumbnail | Malformed | None:
    """Check one message on a ``thumbnail`` topic; None for any other topic."""
    where = split_binary_topic(topic, prefix)
    if where is None or where[1] != "thumbnail":
        return None
    now = time.time() if now is None else now
    if len(raw) > THUMBNAIL_MAX_BYTES:
        return Malformed(topic, f"thumbnail of {len(raw)} bytes, over the {THUMBNAIL_MAX_BYTES} kept", now)
    tag = thumbnail_format.read_tag(bytes(raw))
    if tag is None:
        return Malformed(
            topic, f"not a JPEG tagged {thumbnail_format.FORMAT} (seq and ts in a COM segment)", now
        )
    from PIL import Image  # only dashboards subscribe to thumbnails

    try:
        with Image.open(io.BytesIO(raw), formats=("JPEG",)) as img:  # the header only
            width, height = img.size
    except Exception as err:
        return Malformed(topic, f"thumbnail is not a readable JPEG: {err}", now)
    return Thumbnail(topic, where[0], bytes(raw), tag.seq, tag.ts, width, height, now)


def _label(item: dict[str, Any]) -> str:
    label = item.get("label")
    return str(item.get("index") if label is None else label)[:LABEL_CHARS]


def overlay(pred: dict[str, Any]) -> dict[str, Any]:
    """What the dashboard draws over a thumbnail, from a prediction: bounded in items and characters."""
    n = OVERLAY_ITEMS

    def points(kps: Any) -> list[dict[str, Any]]:
        return [
            {"name": str(k.get("name"))[:LABEL_CHARS], "x": k["x"], "y": k["y"], "score": k.get("score")}
            for k in (kps or [])[: n["keypoints"]]
        ]

    out: dict[str, Any] = {
        "seq": pred.get("seq"),
        "ts": pred.get("ts"),
        "kind": pred.get("kind"),
        "source": str(pred.get("source"))[:LABEL_CHARS],
        "summary": (summary(pred) or "")[: 4 * LABEL_CHARS],
    }
    if "detections" in pred:
        out["detections"] = [
            {"label": _label(d), "score": d.get("score"), "box": d["box"]}
            for d in pred["detections"][: n["detections"]]
        ]
    if "keypoints" in pred:
        out["keypoints"] = points(pred["keypoints"])
        out["pose_score"] = pred.get("pose_score")
    if "poses" in pred:
        out["poses"] = [
            {"pose_score": p.get("pose_score"), "box": p.get("box"), "keypoints": points(p.get("keypoints"))}
            for p in pred["poses"][: n["poses"]]
        ]
    if "segments" in pred:
        out["segments"] = [
            {"label": _label(x), "fraction": x["fraction"]} for x in pred["segments"][: n["segments"]]
        ]
    if "top_k" in pred:
        out["top_k"] = [{"label": _label(c), "score": c.get("score")} for c in pred["top_k"][: n["top_k"]]]
    return out


def parse(
    topic: str,
    raw: bytes,
    *,
    retained: bool = False,
    prefix: str = "edge",
    now: float | None = None,
    builtin: bool = False,
) -> Message | Malformed | None:
    """Check one MQTT message; None when the topic is not one the agent publishes."""
    now = time.time() if now is None else now
    where = schemas.split_topic(topic, prefix)
    if where is None:
        return None
    device, kind = where
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Malformed(topic, f"payload is not UTF-8 text ({err.reason} at byte {err.start})", now)
    if kind == "availability":
        payload: Any = text.strip()
    else:
        try:
            payload = json.loads(text)
        except ValueError as err:
            return Malformed(topic, f"payload is not JSON ({err}): {text[:60]!r}", now)
    found = schemas.problems(kind, payload, builtin=builtin)
    if found:
        return Malformed(
            topic, f"{kind} does not follow schema v{schemas.SCHEMA_VERSION}: " + "; ".join(found[:3]), now
        )
    if kind != "availability" and payload["device"] != device:
        return Malformed(
            topic, f"payload says device {payload['device']!r} but the topic says {device!r}", now
        )
    return Message(topic, device, kind, payload, retained, now)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (what the agent uses too); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def top_result(pred: dict[str, Any]) -> tuple[str | None, float | None]:
    """(label, score) of the best class or detection; label falls back to the index."""
    items = pred.get("top_k") or pred.get("detections") or []
    if not items:
        return None, None
    best = items[0]
    label = best.get("label")
    return (str(best.get("index")) if label is None else label), best.get("score")


def summary(pred: dict[str, Any]) -> str | None:
    """One short line per task: ``cat``, ``person x2, dog``, ``bird 21 %``, ``pose 0.87``, ``dim 128``."""
    kind = pred.get("kind")
    if kind == "detector":
        counts = pred.get("counts")
        if counts is None:  # an older agent: count the detections here
            counts = {}
            for d in pred.get("detections") or []:
                key = str(d["index"]) if d.get("label") is None else d["label"]
                counts[key] = counts.get(key, 0) + 1
        if not counts:
            return "nothing"
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return ", ".join(label if n == 1 else f"{label} x{n}" for label, n in ranked)
    if kind == "segmentation":
        segs = pred.get("segments") or []
        # the largest class that is not the background (PASCAL/ADE label it so, at index 0)
        fg = [x for x in segs if (x.get("label") or "").lower() not in ("background", "__background__")]
        best = (fg or segs or [None])[0]
        if best is None:
            return None
        name = best["label"] if best.get("label") is not None else str(best["index"])
        return f"{name} {best['fraction'] * 100:.0f} %"
    if kind == "pose":
        if "poses" in pred:
            poses = pred["poses"]
            return "no pose" if not poses else f"{len(poses)} poses, best {poses[0]['pose_score']:.2f}"
        return f"pose {pred['pose_score']:.2f}" if pred.get("pose_score") is not None else None
    if kind == "embedding":
        emb = pred.get("embedding") or {}
        return f"dim {emb.get('dim')}, |v| {emb.get('norm', 0):.3g}"
    label, _ = top_result(pred)
    return label


def message_time(payload: Any) -> float | None:
    """The message's own ``ts`` as epoch seconds (None for availability, which carries none)."""
    ts = payload.get("ts") if isinstance(payload, dict) else None
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class DeviceState:
    device: str
    availability: str | None = None
    status: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    last_prediction: dict[str, Any] | None = None
    last_error: dict[str, Any] | None = None
    last_seen: float | None = None
    predictions: int = 0
    duplicates: int = 0
    errors: int = 0
    # (received epoch, total latency ms, seq)
    latencies: deque[tuple[float, float, int]] = field(default_factory=lambda: deque(maxlen=LATENCY_POINTS))
    _seen_seq: deque[int] = field(default_factory=lambda: deque(maxlen=2000))
    drift: DriftTracker = field(default_factory=DriftTracker)
    thumbnail: Thumbnail | None = None
    pair: bool = (
        False  # keep the overlays below for every prediction (a dashboard), not only after a thumbnail
    )
    # (seq, overlay) of the last predictions, to pair with a thumbnail arriving before or after them
    overlays: deque[tuple[int, dict[str, Any]]] = field(default_factory=lambda: deque(maxlen=PAIR_WINDOW))

    def model_sha256(self) -> str | None:
        st = self.status or {}
        return (st.get("model") or {}).get("sha256") or st.get("model_sha256")

    def apply(self, msg: Message) -> None:
        # SEEN is when the device said something: the payload's own ts (a retained status from a device
        # that went offline yesterday is not "0s ago"), capped at arrival time (clock skew); a retained
        # availability carries no time and says nothing about when.
        stamp = message_time(msg.payload)
        if stamp is not None:
            stamp = min(stamp, msg.received)
        elif not msg.retained:
            stamp = msg.received
        if stamp is not None and (self.last_seen is None or stamp > self.last_seen):
            self.last_seen = stamp
        p = msg.payload
        if msg.kind == "availability":
            self.availability = p
        elif msg.kind == "status":
            self.status = p
        elif msg.kind == "metrics":
            self.metrics = p
            self.drift.update(p.get("labels"), self.model_sha256())
        elif msg.kind == "errors":
            self.errors += 1
            self.last_error = p
        elif msg.kind == "predictions":
            # spool replays may repeat what the broker already delivered: dedupe on seq
            if p["seq"] in self._seen_seq:
                self.duplicates += 1
                return
            self._seen_seq.append(p["seq"])
            self.predictions += 1
            if self.last_prediction is None or p["seq"] > self.last_prediction["seq"]:
                self.last_prediction = p
            self.latencies.append((msg.received, float(p["latency_ms"]["total"]), p["seq"]))
            if self.pair or self.thumbnail is not None:
                try:
                    self.overlays.append((p["seq"], overlay(p)))
                except (KeyError, TypeError, AttributeError):  # valid, but not drawable: nothing to draw
                    pass

    def apply_thumbnail(self, thumb: Thumbnail) -> None:
        self.thumbnail = thumb  # QoS 0 from one publisher: the last to arrive is the newest

    def paired(self, build: bool = True) -> dict[str, Any] | None:
        """The overlay of the prediction the thumbnail shows, once that has arrived (before or after it);
        ``build=False``: only whether it has (an empty dict), without building it."""
        thumb = self.thumbnail
        if thumb is None:
            return None
        for seq, over in reversed(self.overlays):
            if seq == thumb.seq:
                return over
        last = self.last_prediction
        if last is not None and last["seq"] == thumb.seq:
            if not build:
                return {}
            try:
                return overlay(last)
            except (KeyError, TypeError, AttributeError):
                return None
        return None

    def frame(self) -> dict[str, Any] | None:
        """The thumbnail and what to draw over it (``/api/frame/<device>``); bounded in bytes."""
        thumb = self.thumbnail
        if thumb is None:
            return None
        return {
            "device": self.device,
            **thumb.describe(),
            "image": "data:image/jpeg;base64," + base64.b64encode(thumb.jpeg).decode("ascii"),
            "prediction": self.paired(),
        }

    def snapshot(self, now: float) -> dict[str, Any]:
        st = self.status or {}
        model = st.get("model") or {}
        runtime = st.get("runtime") or {}
        m = self.metrics
        local = [lat for _, lat, _ in list(self.latencies)[-100:]]
        if m is not None and m["latency_ms"].get("p50") is not None:
            p50, p99, lat_src = m["latency_ms"]["p50"], m["latency_ms"]["p99"], "metrics"
        else:
            p50, p99, lat_src = percentile(local, 50), percentile(local, 99), "predictions"
        if m is not None:
            rate: float | None = m["inferences_per_s"]
        else:
            recent = [t for t, _, _ in self.latencies if now - t <= RATE_WINDOW_S]
            rate = len(recent) / RATE_WINDOW_S if self.latencies else None
        pred = self.last_prediction
        label, score = top_result(pred) if pred else (None, None)
        model_path = model.get("path") or st.get("model_path")
        return {
            "device": self.device,
            "availability": self.availability,
            "model": model_path.replace("\\", "/").rsplit("/", 1)[-1] if model_path else None,
            "model_sha256": self.model_sha256(),
            "model_version": ((st.get("ota") or {}).get("installed") or {}).get("version"),
            "model_kind": model.get("kind"),
            "runtime": (f"{runtime.get('name')} {runtime.get('version') or ''}".strip() if runtime else None),
            "delegate": st.get("delegate"),
            "arch": st.get("arch"),
            "board": st.get("board"),
            "agent_version": st.get("agent_version"),
            "last_label": label,
            "last_score": score,
            "summary": summary(pred) if pred else None,
            "last_seq": pred["seq"] if pred else None,
            "last_source": pred["source"] if pred else None,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "latency_source": lat_src,
            "inferences_per_s": rate,
            "spool_depth": m["spool_depth"] if m else None,
            "cpu_temp_c": m["cpu_temp_c"] if m else None,
            "rss_mb": m["rss_mb"] if m else None,
            "spool_dropped": m["dropped"] if m else None,
            "errors_reported": m["errors"] if m else None,
            "predictions_reported": m.get("predictions", 0) if m else None,
            "metrics_ts": m["ts"] if m else None,
            "status_ts": st.get("ts"),
            "latency_p90_ms": m["latency_ms"]["p90"] if m else None,
            "labels": (m.get("labels") if m else None),
            "drift_psi": self.drift.psi,
            "predictions": self.predictions,
            "duplicates": self.duplicates,
            "errors": self.errors,
            "last_error": self.last_error["error"] if self.last_error else None,
            "last_seen": self.last_seen,
            "last_seen_ago_s": None if self.last_seen is None else max(0.0, now - self.last_seen),
            "latency_series": [[round(t, 3), round(lat, 3)] for t, lat, _ in self.latencies],
            "thumbnail": (
                None
                if self.thumbnail is None
                else {**self.thumbnail.describe(), "paired": self.paired(build=False) is not None}
            ),
        }


class Fleet:
    """Thread-safe: paho's network thread writes, the table/web threads read."""

    def __init__(
        self,
        prefix: str = "edge",
        device: str | None = None,
        validator: str = "auto",
        drift_min: int = 50,
        thumbnails: bool = False,
    ) -> None:
        """``thumbnails``: a dashboard will show thumbnails, keep what pairs them with their predictions."""
        if validator not in ("auto", "builtin", "jsonschema"):
            raise ValueError(f"validator must be auto, builtin or jsonschema, not {validator!r}")
        if validator == "jsonschema" and schemas.backend() != "jsonschema":
            raise EdgeError(
                "--validator jsonschema, but the jsonschema package is not installed",
                "pip install jsonschema, or use --validator auto/builtin",
            )
        # auto: jsonschema when installed (the reference implementation), else the built-in validator;
        # builtin is ~3x faster (benchmarks/watch_ingest.py) and needs nothing: for big fleets on a Pi
        self.builtin = validator == "builtin"
        self.prefix = prefix
        self.only_device = device
        self.devices: dict[str, DeviceState] = {}
        self.drift_min = drift_min
        self.thumbnails = thumbnails
        self.messages = 0
        self.malformed = 0
        self.recent_malformed: deque[Malformed] = deque(maxlen=20)
        self.version = 0
        self.changed = threading.Condition()

    def ingest(
        self, topic: str, raw: bytes, *, retained: bool = False, now: float | None = None
    ) -> Message | Thumbnail | Malformed | None:
        """Parse, validate and apply one MQTT message; never raises for bad payloads."""
        result: Message | Thumbnail | Malformed | None
        try:
            result = parse(topic, raw, retained=retained, prefix=self.prefix, now=now, builtin=self.builtin)
            if result is None:
                result = parse_thumbnail(topic, raw, prefix=self.prefix, now=now)
        except Exception as err:  # a validator bug must not take the view down either
            result = Malformed(
                topic,
                f"could not be checked: {type(err).__name__}: {err}",
                time.time() if now is None else now,
            )
        if result is None:
            return None
        if not isinstance(result, Malformed) and self.only_device and result.device != self.only_device:
            return None
        with self.changed:
            if isinstance(result, Malformed):
                self.malformed += 1
                self.recent_malformed.append(result)
            else:
                self.messages += 1
                dev = self.devices.get(result.device)
                if dev is None:
                    dev = self.devices[result.device] = DeviceState(
                        result.device, drift=DriftTracker(min_inferences=self.drift_min), pair=self.thumbnails
                    )
                if isinstance(result, Thumbnail):
                    dev.apply_thumbnail(result)
                else:
                    dev.apply(result)
            self.version += 1
            self.changed.notify_all()
        return result

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        with self.changed:
            return {
                "now": round(now, 3),
                "version": self.version,
                "messages": self.messages,
                "malformed": self.malformed,
                "recent_malformed": [m.to_json() for m in self.recent_malformed],
                "devices": [self.devices[d].snapshot(now) for d in sorted(self.devices)],
            }

    def frame(self, device: str) -> dict[str, Any] | None:
        """A device's last thumbnail with the results to draw over it; None without one."""
        with self.changed:
            dev = self.devices.get(device)
            return dev.frame() if dev is not None else None

    def wait_change(self, seen_version: int, timeout: float) -> int:
        """Block until the model changes past ``seen_version`` (or timeout); returns the version."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != seen_version, timeout=timeout)
            return self.version
