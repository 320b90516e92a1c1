"""Send a report to ``<prefix>/<device>/bench`` at QoS 1 (docs/mqtt.md) and wait for the broker's ack."""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from edge.errors import EdgeError, InputError

DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class PublishError(EdgeError):
    """The report could not be delivered to the broker."""


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def parse_url(url: str) -> BrokerUrl:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise InputError(
            f"--publish must be a broker URL like mqtt://host:1883 or mqtts://host:8883; received {url!r}",
            "add the scheme and host",
        )
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise InputError(
            f"--publish {url!r} has a bad port: {exc}", "use a port between 1 and 65535"
        ) from exc
    return BrokerUrl(
        parts.hostname,
        port,
        tls,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


def check_device_id(device: str) -> str:
    if not DEVICE_RE.match(device):
        raise InputError(
            f"--device-id must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or "
            f"digit (it becomes an MQTT topic level); received {device!r}",
            "pick a plain name",
        )
    return device


def topic(device: str, prefix: str = "edge") -> str:
    return f"{prefix}/{check_device_id(device)}/bench"


def publish(
    report: Mapping[str, Any], url: str, device: str, prefix: str = "edge", timeout: float = 10.0
) -> str:
    """Publish ``report`` (must carry schema/device/ts) at QoS 1; returns the topic. Raises PublishError."""
    import paho.mqtt.client as mqtt  # lazily: the table/JSON paths need no broker

    missing = [k for k in ("schema", "device", "ts") if k not in report]
    if missing:
        raise ValueError(f"report lacks the keys docs/mqtt.md requires: {missing}")
    target = topic(device, prefix)
    broker = parse_url(url)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-bench-{device}"[:64], protocol=mqtt.MQTTv311
    )
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set_context(ssl.create_default_context())
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            refused.append(str(rc))
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as exc:
        raise PublishError(
            f"cannot reach the MQTT broker at {broker.host}:{broker.port}: {exc}",
            "check --publish (host, port) and that the broker is running",
        ) from exc
    client.loop_start()
    try:
        if not connected.wait(timeout) or refused:
            raise PublishError(
                f"the broker at {broker.host}:{broker.port} did not accept the connection"
                + (f" ({refused[0]})" if refused else f" within {timeout:.0f} s"),
                "check the credentials in the URL and the broker's ACL",
            )
        info = client.publish(target, json.dumps(report), qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise PublishError(
                f"the broker did not acknowledge the report on {target} within {timeout:.0f} s",
                "check the broker's ACL allows publishing there",
            )
    finally:
        client.disconnect()
        client.loop_stop()
    return target
