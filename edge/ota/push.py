"""``edge-flash push-model``: sign a model, send it to one device and wait for its verdict.

The update travels as one MQTT message (see :mod:`edge.ota.manifest`) on
``<prefix>/<device>/model/set``; the device answers on ``<prefix>/<device>/cmd/result``
with the same ``id``: ``ok``, the new ``version``/``sha256``, or the ``reason`` it refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any

from edge.digest import sha256_hex
from edge.errors import EdgeError
from edge.ota.manifest import DEFAULT_MAX_BYTES, build_message, build_stage_message
from edge.transport.topics import Topics
from edge.transport.url import BrokerURL, parse_broker_url

PASSWORD_ENV = "EDGE_MQTT_PASSWORD"


def parse_broker(url: str, username: str | None = None, password: str | None = None) -> BrokerURL:
    """The transport's URL parser, with user and password given apart (never in a URL on a command line)."""
    parsed = parse_broker_url(url)
    return dataclasses.replace(
        parsed,
        username=username or parsed.username,
        password=password if password is not None else parsed.password,
    )


def read_secret(
    value: str | None = None, file: str | Path | None = None, env: str = PASSWORD_ENV
) -> str | None:
    """A password from a file (first line), the environment, or the value given, in that order."""
    if file:
        try:
            return Path(file).read_text().splitlines()[0] if Path(file).read_text() else ""
        except OSError as exc:
            raise EdgeError(
                f"cannot read the password file {file}: {exc.strerror}", "check the path"
            ) from exc
    return os.environ.get(env) or value


def tls_context(
    ca_file: str | None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """Verifying client context, TLS 1.2 or newer, optional client certificate."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert_file:
            ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise EdgeError(f"cannot set up TLS ({exc})", "check --ca-file/--cert-file/--cert-key-file") from exc
    return ctx


def push_model(
    broker_url: str,
    device_id: str,
    key_path: str | Path,
    model_path: str | Path,
    *,
    labels_path: str | Path | None = None,
    version: str | None = None,
    prefix: str = "edge",
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    timeout: float = 120.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    bind_device: bool = True,
    stage: str = "install",
    shadow_fraction: float = 1.0,
    shadow_window_s: float = 10.0,
) -> dict[str, Any]:
    """Send a signed update and return the device's ``cmd/result`` answer (raises EdgeError on no answer).

    ``stage``: ``install`` or ``shadow`` send the model; ``activate`` and ``drop`` send only its sha256
    and size (computed from ``model_path``), naming the candidate shadowing on the device (or, for
    ``activate``, the model it ran before: a rollback)."""
    import paho.mqtt.client as mqtt

    from edge.ota.keys import load_private_key

    if stage == "shadow" and not 0.0 < shadow_fraction <= 1.0:
        raise EdgeError(
            f"--shadow-fraction must be in (0, 1], got {shadow_fraction:g}",
            "the share of inputs the candidate runs on, e.g. --shadow-fraction 0.2 (one in five)",
        )
    if stage == "shadow" and not shadow_window_s > 0.0:
        raise EdgeError(
            f"--shadow-window must be > 0 seconds, got {shadow_window_s:g}",
            "seconds per shadow window the device publishes, e.g. --shadow-window 10",
        )
    model = _read(
        model_path, "model", "pass the .tflite file to send (for --stage activate/drop: the same file)"
    )
    if stage in ("install", "shadow"):
        check_model(model, model_path)
    if len(model) > max_bytes:
        raise EdgeError(
            f"{model_path} is {len(model)} bytes, over the {max_bytes}-byte update limit",
            "shrink the model (edge-convert int8/pruning) or raise --max-bytes and ota.max_bytes",
        )
    labels = _read(labels_path, "labels", "check --labels (one class name a line)") if labels_path else None
    key = load_private_key(key_path)
    cmd_id = uuid.uuid4().hex[:12]
    version = version or Path(model_path).stem
    device = device_id if bind_device else None
    if stage in ("activate", "drop"):
        payload = build_stage_message(
            key,
            stage=stage,
            sha256=sha256_hex(model),
            size=len(model),
            version=version,
            device=device,
            cmd_id=cmd_id,
        )
    else:
        payload = build_message(
            model,
            key,
            version=version,
            labels=labels,
            device=device,
            cmd_id=cmd_id,
            stage=stage,
            shadow_fraction=shadow_fraction,
            shadow_window_s=shadow_window_s,
        )
    broker = parse_broker(broker_url, username, password)
    topics = Topics(prefix, device_id)

    done = threading.Event()
    subscribed = threading.Event()
    state: dict[str, Any] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-push-{cmd_id}")
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set_context(tls_context(ca_file, cert_file, key_file))

    def on_connect(c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            state["error"] = f"broker {broker.redacted()} refused the connection: {rc}"
            done.set()
            return
        c.subscribe(topics.cmd_result, qos=1)

    def on_subscribe(c: Any, *_a: Any) -> None:
        subscribed.set()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        try:
            answer = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(answer, dict) and answer.get("id") == cmd_id:
            state["answer"] = answer
            done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise EdgeError(
            f"cannot connect to {broker.redacted()}: {exc}",
            "check the broker address, port and TLS settings (--ca-file)",
        ) from exc
    client.loop_start()
    try:
        if not subscribed.wait(15) and not done.is_set():
            raise EdgeError(f"no answer from {broker.redacted()} within 15 s", "is the broker running?")
        if "error" in state:
            raise EdgeError(
                state["error"], "check --username and the password (file or $" + PASSWORD_ENV + ")"
            )
        info = client.publish(topics.model_set, payload, qos=1)
        info.wait_for_publish(30)
        if not done.wait(timeout):
            raise EdgeError(
                f"device {device_id!r} did not answer within {timeout:g} s",
                f"is its agent online? (mosquitto_sub -t '{topics.availability}')",
            )
        return dict(state["answer"])
    finally:
        client.loop_stop()
        client.disconnect()


def _read(path: str | Path, what: str, fix: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise EdgeError(f"cannot read the {what} file {path}: {exc.strerror}", fix) from exc


def check_model(model: bytes, path: str | Path) -> None:
    """Refuse, before anything is signed or sent, a file no device would take: not a TFLite flatbuffer
    (a labels file, a .h5, a truncated copy). The device checks again (its guard also loads and runs it);
    this only saves a refused update, or a rolled-back rollout, for a wrong path."""
    from edge.model.tflite_file import TFLiteFormatError, verify

    try:
        verify(model)
    except TFLiteFormatError as exc:
        raise EdgeError(
            f"{path} is not a valid TFLite model: {exc}",
            "pass the .tflite file (edge-convert writes one); nothing was sent",
        ) from exc
