"""An MQTT broker and clients in one process, for tests of the agent's behaviour.

The idea of httpx's ``MockTransport``: the code under test keeps its real collaborators
(spool, outbox, command registry, model slot) and only the wire is replaced. Several
:class:`MemoryClient` objects share one :class:`MemoryBroker`; the broker keeps retained
messages, matches ``+``/``#`` filters, publishes a client's Last Will when it is dropped, and
acknowledges QoS 1 at once. Delivery and acknowledgements run on the broker's own thread, as
paho runs callbacks on its network thread, so a handler never runs inside ``publish()``.

The real end-to-end tests (mosquitto, the agent in a subprocess) prove the wire; these prove
what the agent does with it, in milliseconds per case.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from paho.mqtt.client import topic_matches_sub

from edge.transport.client import Message, Will

if TYPE_CHECKING:
    from edge.transport.base import Transport
    from edge.transport.client import MqttClient

log = logging.getLogger("edge.transport.memory")

_Event = Callable[[], None]


class MemoryBroker:
    """Routes messages between its clients; ``published`` records every message it accepted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: list[MemoryClient] = []
        self.retained: dict[str, Message] = {}
        self.published: list[Message] = []
        self._queue: queue.Queue[_Event | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="memory-broker", daemon=True)
        self._thread.start()

    def client(self, client_id: str, *, will: Will | None = None) -> MemoryClient:
        return MemoryClient(self, client_id, will=will)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5)

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until everything published so far is delivered (and acknowledged)."""
        if threading.current_thread() is self._thread:
            return  # called from a handler: what it waits for runs after it returns
        done = threading.Event()
        self._queue.put(done.set)
        if not done.wait(timeout):
            raise TimeoutError("the memory broker did not deliver within the timeout")

    # --- used by the clients --------------------------------------------------------------------
    def _call(self, fn: _Event) -> None:
        self._queue.put(fn)

    def _attach(
        self, client: MemoryClient, subs: dict[str, tuple[Callable[[Message], None], int]]
    ) -> list[tuple[Callable[[Message], None], Message]]:
        """Connect ``client``; the retained messages its ``subs`` get, taken in the same instant, so
        that a message published meanwhile arrives once, live, and never twice."""
        with self._lock:
            if client not in self._clients:
                self._clients.append(client)
            return [
                (handler, m)
                for flt, (handler, _qos) in subs.items()
                for t, m in self.retained.items()
                if topic_matches_sub(flt, t)
            ]

    def _detach(self, client: MemoryClient) -> None:
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)

    def _accept(self, msg: Message) -> None:
        """Called on the publisher's thread: record now, deliver on the broker thread (keeps order)."""
        with self._lock:
            self.published.append(msg)
            if msg.retain:
                if msg.payload:
                    self.retained[msg.topic] = msg
                else:  # an empty retained message clears the topic, as in MQTT
                    self.retained.pop(msg.topic, None)
            targets = [
                (c, handler)
                for c in self._clients
                for flt, (handler, _qos) in c._subs_snapshot().items()
                if topic_matches_sub(flt, msg.topic)
            ]

        def deliver() -> None:
            live = Message(msg.topic, msg.payload, msg.qos, False, msg.correlation_data, msg.response_topic)
            for c, handler in targets:
                c._dispatch(handler, live)

        self._call(deliver)

    def _run(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:  # a handler's bug must not stop the broker (paho logs and goes on too)
                log.exception("memory broker callback failed")


class MemoryClient:
    """Satisfies :class:`edge.transport.base.Transport`; see the module docstring."""

    def __init__(self, broker: MemoryBroker, client_id: str, *, will: Will | None = None) -> None:
        self.broker = broker
        self.client_id = client_id
        self.will = will
        self._lock = threading.Lock()
        self._subs: dict[str, tuple[Callable[[Message], None], int]] = {}
        self._on_connect: list[_Event] = []
        self._on_disconnect: list[_Event] = []
        self._on_puback: list[Callable[[int], None]] = []
        self._on_refused: list[Callable[[int, str], None]] = []
        self._connected = threading.Event()
        self._generation = 0
        self._mids = itertools.count(1)
        self._last_error: str | None = None
        self.receive_maximum: int | None = None
        self.rejected = 0

    # --- registration ------------------------------------------------------------------------------
    def on_connect(self, callback: _Event) -> None:
        self._on_connect.append(callback)

    def on_disconnect(self, callback: _Event) -> None:
        self._on_disconnect.append(callback)

    def on_puback(self, callback: Callable[[int], None]) -> None:
        self._on_puback.append(callback)

    def on_refused(self, callback: Callable[[int, str], None]) -> None:
        self._on_refused.append(callback)

    def subscribe(self, topic: str, handler: Callable[[Message], None], qos: int = 1) -> None:
        with self._lock:
            self._subs[topic] = (handler, qos)
        if self.connected:
            self._deliver_later(self.broker._attach(self, {topic: (handler, qos)}))

    # --- state --------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # --- life cycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect: subscriptions are (re)made, retained messages sent, then on_connect callbacks run."""
        if self.connected:
            return
        self._generation += 1
        self._last_error = None
        self._connected.set()
        retained = self.broker._attach(self, self._subs_snapshot())
        self._deliver_later(retained, then=list(self._on_connect))

    def stop(self, offline_payload: bytes | str | None = None, timeout: float = 5) -> None:
        """A clean goodbye: ``offline_payload`` on the will topic (retained), no Last Will."""
        if self.connected and offline_payload is not None and self.will is not None:
            self.publish(self.will.topic, offline_payload, 1, True)
            self.broker.settle(timeout)
        self._disconnect(None)

    def drop(self, why: str = "connection lost (memory broker)") -> None:
        """Lose the connection without a goodbye: the broker publishes the Last Will."""
        if not self.connected:
            return
        self._disconnect(why)
        if self.will is not None:
            payload = self.will.payload.encode() if isinstance(self.will.payload, str) else self.will.payload
            self.broker._accept(
                Message(self.will.topic, payload, self.will.qos, self.will.retain, None, None)
            )
        for cb in list(self._on_disconnect):
            self.broker._call(cb)

    def _disconnect(self, why: str | None) -> None:
        self._connected.clear()
        self._last_error = why
        self.broker._detach(self)

    # --- publishing -----------------------------------------------------------------------------------
    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> int | None:
        if not self.connected:
            return None
        if "+" in topic or "#" in topic or not topic:
            raise ValueError(f"cannot publish to {topic!r}: wildcards and empty topics are not topics")
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        props = properties or {}
        corr = props.get("CorrelationData")
        self.broker._accept(
            Message(topic, data, qos, retain, bytes(corr) if corr else None, props.get("ResponseTopic"))
        )
        token = (self._generation << 16) | (next(self._mids) & 0xFFFF)
        if qos > 0:

            def ack() -> (
                None
            ):  # after delivery, on the broker thread: "immediate", yet never inside publish()
                for cb in list(self._on_puback):
                    cb(token)

            self.broker._call(ack)
        return token

    # --- broker side -----------------------------------------------------------------------------------
    def _subs_snapshot(self) -> dict[str, tuple[Callable[[Message], None], int]]:
        with self._lock:
            return dict(self._subs)

    def _deliver_later(
        self, messages: list[tuple[Callable[[Message], None], Message]], then: Sequence[_Event] = ()
    ) -> None:
        def deliver() -> None:
            for handler, m in messages:
                self._dispatch(handler, m)
            for cb in then:
                cb()

        self.broker._call(deliver)

    def _dispatch(self, handler: Callable[[Message], None], msg: Message) -> None:
        if self.connected:
            handler(msg)


if TYPE_CHECKING:  # mypy proves both clients satisfy the protocol the agent is written against

    def _conforms(real: MqttClient, fake: MemoryClient) -> tuple[Transport, Transport]:
        return real, fake
