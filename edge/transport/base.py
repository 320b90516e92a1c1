"""What the agent needs from an MQTT connection, as a Protocol.

:class:`edge.transport.client.MqttClient` (paho underneath, the real one) and
:class:`edge.transport.memory.MemoryClient` (an in-process broker, for tests) both satisfy it;
the agent, the outbox and Home Assistant discovery are written against this, not a class.

``publish`` returns a token for QoS 1 messages (passed to ``on_puback`` callbacks once the
broker acknowledged it) or ``None`` when not connected: nothing is queued in memory, the
spool is the only queue (see :mod:`edge.transport.outbox`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from edge.transport.client import Message


@runtime_checkable
class Transport(Protocol):
    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> int | None: ...

    def subscribe(self, topic: str, handler: Callable[[Message], None], qos: int = 1) -> None: ...

    def on_connect(self, callback: Callable[[], None]) -> None: ...

    def on_disconnect(self, callback: Callable[[], None]) -> None: ...

    def on_puback(self, callback: Callable[[int], None]) -> None: ...

    def on_refused(self, callback: Callable[[int, str], None]) -> None: ...

    def start(self) -> None: ...

    def stop(self, offline_payload: bytes | str | None = None, timeout: float = 5) -> None: ...

    def wait_connected(self, timeout: float) -> bool: ...

    @property
    def connected(self) -> bool: ...

    @property
    def generation(self) -> int:
        """Connections established so far (changes on every reconnect)."""
        ...

    @property
    def last_error(self) -> str | None: ...

    # Flow control from the broker's CONNACK (None: no limit) and refusals counted: read by the outbox.
    receive_maximum: int | None
    rejected: int
