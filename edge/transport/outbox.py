"""Store and forward: spool first, publish second, delete on PUBACK.

``Outbox.send()`` writes the message to the :class:`~edge.transport.spool.Spool` (durable) and wakes one
sender thread, which publishes spooled messages in id order at QoS 1 with up to ``max_inflight``
un-acknowledged at a time and deletes each one when its PUBACK arrives. Whatever was not
acknowledged when a connection dropped (or when the process died) is published again after the
next connect, so a subscriber may see a message twice: JSON-object payloads that come out of the
spool after an outage carry ``"historical": true`` and subscribers deduplicate on ``seq``.

All spool reads and writes of the sender happen in its own thread; the MQTT network thread only
queues acknowledgements, so a slow disk never stalls keep-alives.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import Any

from edge.transport.client import MqttClient, publish_properties
from edge.transport.spool import Spool, SpooledMessage, SpoolFullError

_BATCH = 200  # spool rows read per query


def _encode(payload: dict[str, Any] | bytes | str) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, dict):
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    raise TypeError(f"payload must be a dict, bytes or str, got {type(payload).__name__}")


def mark_historical(payload: bytes) -> bytes:
    """Add ``"historical": true`` to a JSON-object payload; anything else is returned unchanged."""
    if not payload.startswith(b"{"):
        return payload
    try:
        obj = json.loads(payload)
    except ValueError:
        return payload
    if not isinstance(obj, dict) or obj.get("historical") is True:
        return payload
    if "historical" in obj:  # present but not true: rewrite the object
        obj["historical"] = True
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    # A valid JSON object ends with "}": add the member there instead of encoding it all again
    # (a replay after an outage does this for every message; re-encoding took most of its time).
    body = payload.rstrip()
    return body[:-1] + (b',"historical":true}' if obj else b'"historical":true}')


def _check_topic(topic: str) -> None:
    # Reject here, in the caller's thread, what the broker would refuse later: a bad message must
    # never sit at the head of the spool blocking everything behind it.
    if not isinstance(topic, str) or not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(
            f"cannot publish to topic {topic!r}: it must be non-empty and free of the wildcards '+' and '#'"
        )
    if len(topic.encode()) > 65535:
        raise ValueError("topic longer than 65535 bytes")


class Outbox:
    """Durable publisher on top of an :class:`MqttClient` and a :class:`Spool`."""

    def __init__(
        self,
        client: MqttClient,
        spool: Spool,
        *,
        logger: logging.Logger | None = None,
        max_inflight: int = 100,
    ) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, got {max_inflight}")
        self.client = client
        self.spool = spool
        self.max_inflight = max_inflight
        self.log = logger or logging.getLogger("edge.transport.outbox")
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._drained = threading.Condition()
        self._acks: deque[int] = deque()
        self._full_since = 0.0  # monotonic time send() first met a full disk (0: not full)
        self._to_delete: list[int] = []  # acknowledged spool ids not deleted yet (sender thread only)
        self._inflight: dict[int, int] = {}  # publish token -> spool id (sender thread only)
        self._cursor = 0  # highest spool id published on the current connection
        self._generation = -1
        self._boot_last_id = spool.last_id()  # everything up to here was spooled by an earlier run
        # Highest id published so far, and as of the last reconnect: rows up to the latter are replays.
        # Kept in memory: an UPDATE per message just to remember "sent once" would cost a third of
        # the spool's write budget; after a crash, everything found at start-up counts as a replay.
        self._sent_upto = 0
        self._replay_upto = 0
        self._thread: threading.Thread | None = None
        self._published = 0
        self._acked = 0
        self._dropped_qos0 = 0
        self._rejected = 0
        self._inflight_peak = 0
        self._dropped_at_start = spool.dropped()
        client.on_puback(self._on_puback)
        client.on_connect(self._wake.set)
        client.on_disconnect(self._wake.set)

    # ------------------------------------------------------------------ API
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="edge-outbox", daemon=True)
        self._thread.start()
        self._wake.set()

    def send(
        self,
        topic: str,
        payload: dict[str, Any] | bytes | str,
        qos: int = 1,
        retain: bool = False,
        *,
        seq: str | None = None,
        properties: dict[str, Any] | None = None,
        key: str | None = None,
        retry_full_until: threading.Event | None = None,
    ) -> int | None:
        """Queue durably (QoS >= 1) and publish as soon as possible; QoS 0 is best effort, never spooled.

        ``seq="predictions"`` sets ``payload["seq"]`` (a dict payload) from the spool's persisted
        counter of that name *in the same transaction* that spools the message, so a crash can never
        burn a sequence number without its message; the number is returned.
        ``properties``: MQTT 5 publish properties by paho name (e.g. ``{"CorrelationData": b"42"}``),
        stored with the message.
        ``key`` (with ``seq``, QoS >= 1): names the input; sent again with the same key (the input is
        handled a second time, e.g. after a crash before it was recorded as done), nothing new is
        spooled and the number it got the first time is returned.
        ``retry_full_until``: on a full disk, try again every second until the spool takes the message
        or this event is set (then :class:`SpoolFullError` is raised), instead of failing at once: the
        caller (and whatever feeds it) waits for space rather than losing the input until a restart.
        """
        while True:
            try:
                number = self._send(topic, payload, qos, retain, seq=seq, properties=properties, key=key)
            except SpoolFullError as err:
                if retry_full_until is None or retry_full_until.is_set():
                    raise
                if not self._full_since:
                    self._full_since = time.monotonic()
                    self.log.error("%s; waiting for free space (retrying every second)", err.what)
                if retry_full_until.wait(1.0):
                    raise
                continue
            if self._full_since:
                self.log.warning(
                    "the spool takes messages again after %.0f s of full disk",
                    time.monotonic() - self._full_since,
                )
                self._full_since = 0.0
            return number

    def _send(
        self,
        topic: str,
        payload: dict[str, Any] | bytes | str,
        qos: int,
        retain: bool,
        *,
        seq: str | None,
        properties: dict[str, Any] | None,
        key: str | None,
    ) -> int | None:
        _check_topic(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        if properties:
            publish_properties(properties)  # validate now, not in the sender thread
        if seq is not None and not isinstance(payload, dict):
            raise TypeError("seq= needs a dict payload (the number is stored under the key 'seq')")
        if qos == 0:
            number = None
            if seq is not None:
                number = self.spool.next_seq(seq)
                payload = {**payload, "seq": number}  # type: ignore[dict-item]
            if (
                self.client.publish(topic, _encode(payload), qos=0, retain=retain, properties=properties)
                is None
            ):
                self._dropped_qos0 += 1
            else:
                self._published += 1
            return number
        # QoS 2 is stored and sent as QoS 1: the spool already gives at-least-once, and subscribers
        # deduplicate on seq, so the extra round trip would buy nothing.
        if seq is not None:
            obj = dict(payload)  # type: ignore[arg-type]
            _, number = self.spool.put_sequenced(
                topic,
                lambda n: _encode({**obj, "seq": n}),
                name=seq,
                qos=1,
                retain=retain,
                historical=self._outage(),
                properties=properties,
                key=key,
            )
        else:
            self.spool.put(
                topic, _encode(payload), 1, retain, historical=self._outage(), properties=properties
            )
            number = None
        self._wake.set()
        return number

    def _outage(self) -> bool:
        # Not connected *because of a failure* (or after having been connected). The instant
        # between start-up and the first CONNACK is not an outage.
        c = self.client
        return not c.connected and (c.generation > 0 or c.last_error is not None)

    def flush(self, timeout: float) -> bool:
        """Wait until every spooled message is acknowledged; False on timeout (they stay spooled)."""
        deadline = time.monotonic() + timeout
        with self._drained:
            while self.spool.depth() > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._drained.wait(min(left, 0.1))
        return True

    def stats(self) -> dict[str, int]:
        spool_dropped = self.spool.dropped()
        return {
            "spool_depth": self.spool.depth(),
            "dropped": spool_dropped + self._dropped_qos0,
            "dropped_spool": spool_dropped,
            "dropped_qos0": self._dropped_qos0,
            "dropped_spool_since_start": spool_dropped - self._dropped_at_start,
            "rejected": self._rejected + self.client.rejected,
            "published": self._published,
            "acked": self._acked,
            "inflight": len(self._inflight),
            "inflight_peak": self._inflight_peak,
        }

    def stop(self) -> None:
        """Stop the sender; un-acknowledged messages stay in the spool for the next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    # ------------------------------------------------------------------ sender thread
    def _on_puback(self, token: int) -> None:  # network thread: no disk I/O here
        self._acks.append(token)
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                busy = self._step()
            except Exception:
                # A full disk or a locked spool must not end publishing for good: log and retry.
                self.log.exception("outbox sender failed; retrying in 1 s")
                self._stopping.wait(1.0)
                continue
            if not busy:
                self._wake.wait(0.5)
        self._drain_acks()

    def _step(self) -> bool:
        """One round of work; True when there may be more to do right away."""
        self._drain_acks()
        if not self.client.connected:
            return False
        gen = self.client.generation
        if gen != self._generation:
            # New connection: PUBACKs for the old one will never come. Replay from the oldest row.
            if self._inflight:
                self.log.info("replaying %d unacknowledged messages after reconnect", len(self._inflight))
            self._inflight.clear()
            self._cursor = 0
            self._replay_upto = self._sent_upto
            self._generation = gen
        limit = min(self.max_inflight, self.client.receive_maximum or self.max_inflight)
        room = limit - len(self._inflight)
        if room <= 0:
            return False
        if self._cursor >= self.spool.newest_id():
            return False  # nothing spooled since the last row sent (e.g. woken by a PUBACK): no query
        rows = self.spool.pending(limit=min(room, _BATCH), after_id=self._cursor)
        if not rows:
            return False
        replays = [r.id for r in rows if r.id <= self._replay_upto or r.id <= self._boot_last_id]
        if replays:
            self.spool.mark_attempted(replays)  # diagnostics: how often a message had to be re-sent
        for row in rows:
            if not self._publish(row):
                return False
        return True

    def _publish(self, row: SpooledMessage) -> bool:
        payload = row.payload
        if row.historical or row.attempts > 0 or row.id <= self._boot_last_id or row.id <= self._replay_upto:
            payload = mark_historical(payload)
        try:
            token = self.client.publish(
                row.topic, payload, qos=row.qos, retain=row.retain, properties=row.properties
            )
        except Exception as err:
            # Cannot ever be encoded (bad topic or property spooled by an older version): drop it
            # rather than block everything behind it forever.
            self.log.error("dropping spooled message %d on %r: %s", row.id, row.topic, err)
            self._rejected += 1
            self.spool.ack([row.id])
            self._cursor = row.id
            return True
        if token is None:
            return False  # disconnected meanwhile; replay starts over after the reconnect
        self._published += 1
        self._cursor = row.id
        self._sent_upto = max(self._sent_upto, row.id)
        if row.qos == 0:
            self.spool.ack([row.id])
        else:
            self._inflight[token] = row.id
            self._inflight_peak = max(self._inflight_peak, len(self._inflight))
        return True

    def _drain_acks(self) -> None:
        while self._acks:
            spool_id = self._inflight.pop(self._acks.popleft(), None)
            if spool_id is not None:
                self._to_delete.append(spool_id)
        if self._to_delete:
            ids = self._to_delete
            # Raises on a full disk (rare: the spool gives up a reserve first); the ids stay here and
            # the next round deletes them, instead of leaving them in the spool until a restart.
            self.spool.ack(ids)
            self._to_delete = []
            self._acked += len(ids)
            if self.spool.depth() == 0:
                with self._drained:
                    self._drained.notify_all()
