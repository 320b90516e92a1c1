"""One MQTT connection of a host-side fleet command: connected and subscribed, or a clear EdgeError."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from edge.errors import EdgeError
from edge.transport.url import BrokerURL


def connect_subscribed(
    broker: BrokerURL,
    client_id: str,
    topics: Sequence[tuple[str, int]],
    on_message: Callable[[Any, Any, Any], None],
    *,
    timeout_s: float,
    clean_session: bool = True,
    configure: Callable[[Any], None] | None = None,
) -> Any:
    """A paho client (network loop running) whose SUBACK for ``topics`` has arrived, so the retained
    messages are on their way to ``on_message``. ``configure(client)`` runs before connecting."""
    import paho.mqtt.client as mqtt

    subscribed = threading.Event()
    refused: list[str] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set()
    if configure is not None:
        configure(client)

    def on_connect(c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if reason.is_failure:
            refused.append(str(reason))
            subscribed.set()
            return
        c.subscribe(list(topics))

    client.on_connect, client.on_message = on_connect, on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except (OSError, ValueError) as err:
        raise EdgeError(
            f"cannot reach the broker at {broker.redacted()}: {err}",
            "check --broker and that the broker is running",
        ) from err
    client.loop_start()
    if subscribed.wait(timeout_s) and not refused:
        return client
    client.disconnect()
    client.loop_stop()
    if refused:
        raise EdgeError(
            f"the broker refused the connection: {refused[0]}", "check the credentials in --broker"
        )
    raise EdgeError(
        f"no answer from the broker at {broker.redacted()} in {timeout_s:g} s",
        "check --broker (host, port, mqtts:// for TLS)",
    )
