"""The signed manifest of a model update and the one-message wire format of ``<prefix>/<device>/model/set``.

Wire format (one MQTT message, so an update is delivered whole or not at all)::

    b"EDGEUPD1"                     8 bytes, magic and format version
    header length                   4 bytes, unsigned big-endian
    header                          UTF-8 JSON {"id", "manifest": {...}, "signature": base64}
    model bytes                     manifest.size bytes (none for stage activate/drop)
    labels bytes                    manifest.labels_size bytes (optional; none for activate/drop)

``manifest.stage`` says what to do with the model: ``install`` (the default, and all a manifest without a
stage can mean) replaces the serving model; ``shadow`` loads it *beside* the serving model and compares
the two on live inputs (edge.agent.shadow); ``activate`` and ``drop`` carry no model bytes: they name a
model by its sha256/size (the shadowing candidate, or for ``activate`` also the model the last install
replaced: a rollback) and promote or discard it. Every stage is signed and replay-checked alike.

The signature is Ed25519 over the manifest's canonical JSON (sorted keys, no
spaces); the manifest carries the sha256 and size of the model (and labels),
so the bytes are covered too. The device checks, in order: the message size
cap, the framing, the signature against its configured public keys, the
target device, then sizes and hashes; only then does it write anything.
"""

# msgspec evaluates annotations at run time: Optional keeps the records importable on Python 3.9.
# ruff: noqa: UP045
from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Optional

import msgspec
from msgspec import Meta

from edge.contract.messages import utc_iso
from edge.contract.payload import PayloadError, loads
from edge.digest import sha256_hex
from edge.errors import EdgeError
from edge.validation import Record, to_builtins

MAGIC = b"EDGEUPD1"
FORMAT = "edge-model-update/1"
MAX_HEADER = 64 * 1024
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

# Every reason an update can be refused for, as reported in cmd/result's "reason".
REFUSAL_REASONS = {
    "oversize": "the update is larger than the device accepts",
    "malformed": "the message is not an update in the edge-model-update/1 format",
    "unsigned": "the manifest carries no signature",
    "no_key": "the device has no public key configured, so it accepts no update",
    "wrong_key": "the update was signed by a key the device does not trust",
    "bad_signature": "the signature does not match the manifest (tampered or corrupt)",
    "wrong_device": "the update is addressed to another device",
    "truncated": "the model (or labels) is shorter than the manifest says",
    "wrong_hash": "the model's (or labels') sha256 differs from the manifest's",
    "health_check": "the new model failed its health check; the previous model was kept or restored",
    "install_failed": "writing or switching the model failed; the previous model was kept or restored",
    "busy": "another update is in progress",
    "replayed": "the update is not newer than the last one installed (an old message sent again?)",
    "disabled": "model/set is disabled in this agent's config (commands.disabled)",
    "no_candidate": "activate/drop names a sha256 that is neither the shadowing candidate nor the previous model",
    "shadow_failed": "the shadow candidate failed its guard, load or test inference; the active model serves on",
}

STAGES = ("install", "shadow", "activate", "drop")
Stage = Literal["install", "shadow", "activate", "drop"]
MODEL_STAGES = ("install", "shadow")  # the stages whose message carries the model bytes
# Defaults of the fields added with stages: left out of the canonical JSON when at their default, so a
# manifest signed before stages existed verifies unchanged (and means what it meant: install).
_STAGE_DEFAULTS: dict[str, Any] = {"stage": "install", "shadow_fraction": 1.0, "shadow_window_s": 10.0}


_SHA256 = r"^[0-9a-f]{64}$"


class Manifest(Record, frozen=True, kw_only=True):
    """What the signature vouches for."""

    format: Annotated[str, Meta(description="manifest format, for future changes")] = FORMAT
    version: Annotated[
        str, Meta(min_length=1, max_length=128, description="model version, free text (e.g. 1.4.0)")
    ]
    sha256: Annotated[str, Meta(pattern=_SHA256, description="sha256 of the model bytes")]
    size: Annotated[int, Meta(ge=0, description="model size in bytes")]
    labels_sha256: Annotated[
        Optional[Annotated[str, Meta(pattern=_SHA256)]], Meta(description="sha256 of the labels file")
    ] = None
    labels_size: Annotated[int, Meta(ge=0, description="labels size in bytes (0 = no labels)")] = 0
    device: Annotated[
        Optional[Annotated[str, Meta(max_length=256)]],
        Meta(description="target device id; null = any device"),
    ] = None
    key_id: Annotated[
        str, Meta(min_length=1, max_length=64, description="fingerprint of the signing public key")
    ]
    created: Annotated[
        str,
        Meta(
            pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$",
            description="UTC time of signing (ISO 8601, Z); later updates must be signed later",
        ),
    ]
    stage: Annotated[
        Stage,
        Meta(description="install (default), shadow beside the active model, activate or drop a candidate"),
    ] = "install"
    shadow_fraction: Annotated[
        float, Meta(gt=0, le=1, description="stage shadow: the share of inputs the candidate also runs")
    ] = 1.0
    shadow_window_s: Annotated[
        float, Meta(gt=0, le=3600, description="stage shadow: seconds between two shadow window messages")
    ] = 10.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = to_builtins(self)
        for key, default in _STAGE_DEFAULTS.items():
            if out.get(key) == default:
                del out[key]
            elif isinstance(default, float):
                out[key] = float(out[key])  # 5 and 5.0 must sign alike: the device decodes a float
        return out

    def canonical(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()


class UpdateRefusedError(EdgeError):
    """An update was refused; ``reason`` is one of :data:`REFUSAL_REASONS`."""

    def __init__(self, reason: str, what: str, fix: str = "") -> None:
        assert reason in REFUSAL_REASONS, reason
        self.reason = reason
        super().__init__(what, fix)


@dataclass(frozen=True)
class VerifiedUpdate:
    """An update whose signature, target, sizes and hashes all checked out."""

    id: str | None
    manifest: Manifest
    model: bytes
    labels: bytes | None


def signed_time(created: str) -> datetime:
    """``Manifest.created`` as an aware datetime (Python 3.9's fromisoformat does not take ``Z``)."""
    return datetime.fromisoformat(created.replace("Z", "+00:00"))


def build_message(
    model: bytes,
    private_key: Any,
    *,
    version: str,
    labels: bytes | None = None,
    device: str | None = None,
    cmd_id: str | None = None,
    stage: str = "install",
    shadow_fraction: float = 1.0,
    shadow_window_s: float = 10.0,
) -> bytes:
    """Sign a manifest for ``model`` (and ``labels``) and frame the whole update as one message.

    ``stage``: ``install`` (replace the serving model) or ``shadow`` (run it beside the serving model on
    ``shadow_fraction`` of the inputs, reporting every ``shadow_window_s`` seconds)."""
    if stage not in MODEL_STAGES:
        raise EdgeError(
            f"stage {stage!r} carries no model",
            "use stage install or shadow here; build_stage_message for activate/drop",
        )
    return _sign(
        private_key,
        cmd_id,
        model,
        labels or b"",
        version=version,
        sha256=sha256_hex(model),
        size=len(model),
        labels_sha256=sha256_hex(labels) if labels else None,
        labels_size=len(labels or b""),
        device=device,
        stage=stage,
        shadow_fraction=shadow_fraction,
        shadow_window_s=shadow_window_s,
    )


def build_stage_message(
    private_key: Any,
    *,
    stage: str,
    sha256: str,
    size: int,
    version: str,
    device: str | None = None,
    cmd_id: str | None = None,
) -> bytes:
    """Sign an ``activate`` or ``drop`` naming a model by ``sha256``/``size``: no model bytes follow.

    ``activate`` promotes the shadowing candidate, or, naming the model the last install replaced,
    rolls back to it; ``drop`` discards the candidate."""
    if stage not in ("activate", "drop"):
        raise EdgeError(
            f"stage {stage!r} is not activate or drop",
            "send install/shadow with build_message (they carry the model)",
        )
    return _sign(
        private_key, cmd_id, b"", b"", version=version, sha256=sha256, size=size, device=device, stage=stage
    )


def _sign(private_key: Any, cmd_id: str | None, model: bytes, labels: bytes, **fields: Any) -> bytes:
    from edge.ota.keys import key_id

    try:
        manifest = Manifest(
            key_id=key_id(private_key.public_key()),
            # Microseconds: two updates signed in a row must never share a timestamp (replay check).
            created=utc_iso(timespec="microseconds"),
            **fields,
        )
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        raise EdgeError(f"cannot build the update manifest: {exc}", "check the stage arguments") from exc
    signature = base64.b64encode(private_key.sign(manifest.canonical())).decode()
    return frame({"id": cmd_id, "manifest": manifest.to_dict(), "signature": signature}, model, labels)


def frame(header: dict[str, Any], model: bytes, labels: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + struct.pack(">I", len(head)) + head + model + labels


def read_header(payload: bytes) -> tuple[dict[str, Any], int]:
    """(header, offset of the model bytes); raise ``malformed`` on anything else."""
    if payload[:8] != MAGIC:
        raise UpdateRefusedError(
            "malformed",
            f"update starts with {payload[:8]!r}, expected {MAGIC!r}",
            "send updates with edge-flash push-model",
        )
    if len(payload) < 12:
        raise UpdateRefusedError(
            "malformed", "update ends inside its header length", "the message was cut: send it again"
        )
    (n,) = struct.unpack(">I", payload[8:12])
    if n > MAX_HEADER or 12 + n > len(payload):
        raise UpdateRefusedError(
            "malformed",
            f"update header claims {n} bytes but the message has "
            f"{len(payload) - 12} after the length (header limit {MAX_HEADER})",
            "the message was cut or corrupted: send it again",
        )
    try:
        header = loads(memoryview(payload)[12 : 12 + n], what="update header", max_bytes=MAX_HEADER)
    except PayloadError as exc:
        raise UpdateRefusedError("malformed", exc.what, "send updates with edge-flash push-model") from None
    if not isinstance(header, dict):
        raise UpdateRefusedError(
            "malformed",
            f"update header is a {type(header).__name__}, expected an object",
            "send updates with edge-flash push-model",
        )
    return header, 12 + n


def header_id(payload: bytes) -> str | None:
    """The command id of an update, best effort (for answering even malformed updates)."""
    try:
        header, _ = read_header(payload)
    except UpdateRefusedError:
        return None
    value = header.get("id")
    return value if isinstance(value, str) else None


def verify_message(
    payload: bytes, public_keys: list[Any], *, device: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> VerifiedUpdate:
    """Check an update message completely, before anything is written; raise :class:`UpdateRefusedError`."""
    if len(payload) > max_bytes + MAX_HEADER + 12:
        raise UpdateRefusedError(
            "oversize",
            f"update message is {len(payload)} bytes, over the device's {max_bytes}-byte model limit",
            "shrink the model (edge-convert --prune/int8) or raise ota.max_bytes in the agent config",
        )
    header, offset = read_header(payload)
    cmd_id = header.get("id") if isinstance(header.get("id"), str) else None
    signature = header.get("signature")
    if not isinstance(header.get("manifest"), dict):
        raise UpdateRefusedError(
            "malformed", "update header has no manifest object", "send updates with edge-flash push-model"
        )
    try:
        manifest = msgspec.convert(header["manifest"], Manifest)
    except msgspec.ValidationError as exc:
        raise UpdateRefusedError(
            "malformed", f"manifest: {exc}", "send updates with edge-flash push-model"
        ) from exc
    if not signature:
        raise UpdateRefusedError(
            "unsigned",
            "update manifest has no signature: refusing an unsigned model",
            "sign it: edge-flash push-model --key PRIVATE_KEY ...",
        )
    if not public_keys:
        raise UpdateRefusedError(
            "no_key",
            "this device has no update public key configured, so it accepts no model update",
            "put the .pub file from edge-flash keygen in the agent config "
            "(ota.public_keys) and restart the agent",
        )
    from edge.ota.keys import crypto, key_id

    trusted = {key_id(k): k for k in public_keys}
    key = trusted.get(manifest.key_id)
    if key is None:
        raise UpdateRefusedError(
            "wrong_key",
            f"update is signed by key {manifest.key_id}, which this device "
            f"does not trust (trusted: {', '.join(sorted(trusted))})",
            "sign with the private key matching ota.public_keys, or add its .pub there",
        )
    try:
        raw = base64.b64decode(str(signature), validate=True)
        key.verify(raw, manifest.canonical())
    except (binascii.Error, ValueError, crypto().InvalidSignature) as exc:
        raise UpdateRefusedError(
            "bad_signature",
            f"the signature of update {manifest.version} does not verify "
            f"with key {manifest.key_id}: the manifest was altered or the signature is corrupt",
            "push the model again with edge-flash push-model",
        ) from exc
    if manifest.device is not None and device is not None and manifest.device != device:
        raise UpdateRefusedError(
            "wrong_device",
            f"update is for device {manifest.device!r}, this is {device!r}",
            "push with --device-id of this device",
        )
    if manifest.stage not in MODEL_STAGES:
        # activate/drop: the signed manifest names a model the device already holds; nothing may follow
        if len(payload) > offset:
            raise UpdateRefusedError(
                "malformed",
                f"a {manifest.stage} message carries {len(payload) - offset} bytes after its header; "
                "it must carry none",
                "send activate/drop with edge-fleet rollout (or build_stage_message)",
            )
        return VerifiedUpdate(cmd_id, manifest, b"", None)
    if manifest.size > max_bytes:
        raise UpdateRefusedError(
            "oversize",
            f"model is {manifest.size} bytes, over the device's {max_bytes}-byte limit",
            "shrink the model or raise ota.max_bytes in the agent config",
        )
    body = payload[offset:]
    expected = manifest.size + manifest.labels_size
    if len(body) < expected:
        raise UpdateRefusedError(
            "truncated",
            f"update carries {len(body)} bytes of model and labels, the manifest says {expected}",
            "the transfer was cut: push the model again",
        )
    if len(body) > expected:
        raise UpdateRefusedError(
            "malformed",
            f"update carries {len(body) - expected} bytes more than the manifest says",
            "push the model again with edge-flash push-model",
        )
    model, labels = body[: manifest.size], body[manifest.size :]
    got = sha256_hex(model)
    if got != manifest.sha256:
        raise UpdateRefusedError(
            "wrong_hash",
            f"model sha256 is {got}, the signed manifest says {manifest.sha256}",
            "the model was altered in transit or on the broker: push it again",
        )
    if manifest.labels_size:
        got = sha256_hex(labels)
        if got != manifest.labels_sha256:
            raise UpdateRefusedError(
                "wrong_hash",
                f"labels sha256 is {got}, the manifest says {manifest.labels_sha256}",
                "push the model again",
            )
    return VerifiedUpdate(cmd_id, manifest, model, labels if manifest.labels_size else None)
