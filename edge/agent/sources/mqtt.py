"""Inference requests over MQTT: image bytes on ``<prefix>/<device>/infer``.

MQTT 5 clients put a correlation id in Correlation Data (and may set a
Response Topic); MQTT 3.1.1 clients have no properties, so they publish to
``infer/<correlation-id>`` instead. Requests are queued off the network
thread; when the queue is full the request is refused with an error message
rather than silently dropped.
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


class MqttSource:
    def __init__(
        self,
        client: Any,
        infer_topic: str,
        queue_size: int = 64,
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self.client = client
        self.topic = infer_topic
        self.description = f"mqtt:{infer_topic}"
        self.queue: queue.Queue[Item] = queue.Queue(maxsize=queue_size)
        self.on_refused = on_refused
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
        item = Item(
            name,
            bytes(msg.payload),
            correlation_data=corr,
            response_topic=getattr(msg, "response_topic", None),
        )
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            log.warning("infer request %s refused: %d requests already queued", name, self.queue.maxsize)
            if self.on_refused:
                self.on_refused(name, f"request refused: {self.queue.maxsize} requests already queued")

    def items(self, stop: threading.Event, once: bool) -> Iterator[Item]:
        while not stop.is_set():
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            yield item
            if once:
                return

    def done(self, item: Item) -> None:
        pass

    def close(self) -> None:
        pass
