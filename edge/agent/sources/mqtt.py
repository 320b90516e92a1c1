"""Inference requests over MQTT: image bytes on ``<prefix>/<device>/infer``.

MQTT 5 clients put a correlation id in Correlation Data (and may set a
Response Topic); MQTT 3.1.1 clients have no properties, so they publish to
``infer/<correlation-id>`` instead. Requests are queued off the network
thread; a request over ``max_request_bytes``, or one that would take the queue
over ``max_queue_bytes`` or ``queue_size`` requests, is refused at once with an
``errors`` message, before any decoding, rather than silently dropped: memory
stays bounded in bytes under a flood of large payloads.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from edge.agent.sources.base import Item

log = logging.getLogger("edge.agent.source")
_SLOW_DOWN = "slow down requests: wait for predictions before sending more"


class MqttSource:
    def __init__(
        self,
        client: Any,
        infer_topic: str,
        queue_size: int = 64,
        on_refused: Callable[[str, str, str], None] | None = None,
        *,
        max_request_bytes: int = 16 * 1024 * 1024,
        max_queue_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.client = client
        self.topic = infer_topic
        self.description = f"mqtt:{infer_topic}"
        self.queue: queue.Queue[tuple[Item, int]] = queue.Queue(maxsize=queue_size)
        self.on_refused = on_refused
        self.max_request_bytes = max_request_bytes
        self.max_queue_bytes = max_queue_bytes
        self._queued_bytes = 0
        self._lock = threading.Lock()
        client.subscribe(infer_topic, self._on_message, 1)
        client.subscribe(infer_topic + "/+", self._on_message, 1)

    def _on_message(self, msg: Any) -> None:
        corr: bytes | None = getattr(msg, "correlation_data", None)
        if msg.topic != self.topic and msg.topic.startswith(self.topic + "/"):
            name = msg.topic[len(self.topic) + 1 :]
        elif corr:
            name = corr.decode("utf-8", "replace")
        else:
            name = f"mqtt-{uuid.uuid4().hex[:12]}"
        size = len(msg.payload)
        if size > self.max_request_bytes:
            return self._refuse(
                name,
                f"request refused: {size} bytes, over the {self.max_request_bytes}-byte limit",
                "send a smaller image, or raise source.max_request_bytes in the agent config",
            )
        with self._lock:
            over = self._queued_bytes + size > self.max_queue_bytes
            if not over:
                self._queued_bytes += size
        if over:
            return self._refuse(
                name, f"request refused: {self.max_queue_bytes} bytes of requests already queued", _SLOW_DOWN
            )
        item = Item(
            name,
            bytes(msg.payload),
            correlation_data=corr,
            response_topic=getattr(msg, "response_topic", None),
        )
        try:
            self.queue.put_nowait((item, size))
        except queue.Full:
            self._release(size)
            self._refuse(name, f"request refused: {self.queue.maxsize} requests already queued", _SLOW_DOWN)

    def _refuse(self, name: str, what: str, fix: str) -> None:
        log.warning("infer request %s: %s", name, what)
        if self.on_refused:
            self.on_refused(name, what, fix)

    def _release(self, size: int) -> None:
        with self._lock:
            self._queued_bytes -= size

    def items(self, stop: threading.Event, once: bool) -> Iterator[Item]:
        while not stop.is_set():
            try:
                item, size = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._release(size)
            yield item
            if once:
                return

    def done(self, item: Item) -> None:
        pass

    def close(self) -> None:
        pass
