"""A minimal MQTT 3.1.1 broker for loopback use when mosquitto is not installed.

``edge-demo`` falls back to it so the whole chain runs on a machine with only
Python. It is deliberately small: QoS 0 and 1 (QoS 2 is accepted and
delivered at QoS 1), retained messages, Last Will on an unclean disconnect or
a missed keepalive, ``+``/``#`` wildcards, client-id takeover. No
persistence, no authentication, no MQTT 5, no retransmission (loopback does
not lose packets). Anything facing a network should use mosquitto.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from dataclasses import dataclass, field

from edge.errors import EdgeError

log = logging.getLogger("edge.minibroker")

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
MAX_PACKET = 16 * 1024 * 1024


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching; wildcards at the first level never match ``$SYS``-style topics."""
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    p_parts, t_parts = pattern.split("/"), topic.split("/")
    for i, p in enumerate(p_parts):
        if p == "#":
            return True
        if i >= len(t_parts) or (p != "+" and p != t_parts[i]):
            return False
    return len(p_parts) == len(t_parts)


def _encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + _encode_length(len(body)) + body


class ProtocolError(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("packet shorter than its fields")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack("!H", self.take(2))[0])

    def string(self) -> bytes:
        return self.take(self.u16())

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)


@dataclass
class _Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class _Session:
    client_id: str
    writer: asyncio.StreamWriter
    subs: dict[str, int] = field(default_factory=dict)
    will: _Will | None = None
    next_mid: int = 0

    def mid(self) -> int:
        self.next_mid = self.next_mid % 65535 + 1
        return self.next_mid


class MiniBroker:
    """``MiniBroker().start()`` listens on a free loopback port in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.retained: dict[str, tuple[bytes, int]] = {}
        self.sessions: dict[str, _Session] = {}
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> MiniBroker:
        started = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._server = self._loop.run_until_complete(
                    asyncio.start_server(self._client, self.host, self.port)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except OSError as err:
                error.append(err)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="edge-minibroker", daemon=True)
        self._thread.start()
        started.wait(10)
        if error:
            raise EdgeError(
                f"the embedded broker cannot listen on {self.host}:{self.port}: {error[0]}",
                "pick another port, or install mosquitto",
            )
        return self

    def stop(self) -> None:
        if self._thread is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for s in list(self.sessions.values()):
                s.writer.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._thread = None

    def __enter__(self) -> MiniBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------- wire
    @staticmethod
    async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
        head = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        for _ in range(4):
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        else:
            raise ProtocolError("malformed remaining length")
        if length > MAX_PACKET:
            raise ProtocolError(f"packet of {length} bytes is over the {MAX_PACKET} limit")
        return head >> 4, head & 0x0F, await reader.readexactly(length)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session: _Session | None = None
        clean = False
        try:
            kind, _flags, body = await asyncio.wait_for(self._read_packet(reader), 10)
            if kind != CONNECT:
                raise ProtocolError("the first packet must be CONNECT")
            session, keepalive = self._connect(body, writer)
            if session is None:
                return
            timeout = keepalive * 1.5 if keepalive else None
            while True:
                kind, flags, body = await asyncio.wait_for(self._read_packet(reader), timeout)
                if kind == DISCONNECT:
                    clean = True
                    return
                self._handle(session, kind, flags, body)
                await writer.drain()
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.TimeoutError,
            ProtocolError,
            OSError,
        ) as err:
            if session is not None:
                log.debug("client %s gone: %s", session.client_id, err or type(err).__name__)
        finally:
            if session is not None and self.sessions.get(session.client_id) is session:
                del self.sessions[session.client_id]
                if not clean and session.will is not None:
                    w = session.will
                    self._publish(w.topic, w.payload, w.qos, w.retain)
            writer.close()

    def _connect(self, body: bytes, writer: asyncio.StreamWriter) -> tuple[_Session | None, int]:
        r = _Reader(body)
        name, level, flags, keepalive = r.string(), r.u8(), r.u8(), r.u16()
        if name != b"MQTT" or level != 4:
            # 0x01: unacceptable protocol version (what an MQTT 5 client gets here)
            writer.write(_packet(CONNACK, 0, b"\x00\x01"))
            return None, 0
        client_id = r.string().decode("utf-8", "replace") or f"anon-{id(writer):x}"
        will = None
        if flags & 0x04:
            topic = r.string().decode("utf-8")
            will = _Will(topic, r.string(), (flags >> 3) & 0x03, bool(flags & 0x20))
        old = self.sessions.get(client_id)
        if old is not None:  # takeover: the old connection goes, without its will
            old.will = None
            old.writer.close()
        session = _Session(client_id, writer, will=will)
        self.sessions[client_id] = session
        writer.write(_packet(CONNACK, 0, b"\x00\x00"))
        return session, keepalive

    def _handle(self, s: _Session, kind: int, flags: int, body: bytes) -> None:
        r = _Reader(body)
        if kind == PUBLISH:
            qos, retain = (flags >> 1) & 0x03, bool(flags & 0x01)
            topic = r.string().decode("utf-8")
            mid = r.u16() if qos else 0
            payload = r.rest()
            if qos == 1:
                s.writer.write(_packet(PUBACK, 0, struct.pack("!H", mid)))
            elif qos == 2:
                s.writer.write(_packet(PUBREC, 0, struct.pack("!H", mid)))
            self._publish(topic, payload, min(qos, 1), retain)
        elif kind == PUBREL:
            s.writer.write(_packet(PUBCOMP, 0, r.take(2)))
        elif kind == SUBSCRIBE:
            mid = r.u16()
            granted, new = bytearray(), []
            while r.pos < len(r.data):
                pattern, qos = r.string().decode("utf-8"), r.u8() & 0x03
                s.subs[pattern] = min(qos, 1)
                granted.append(min(qos, 1))
                new.append(pattern)
            s.writer.write(_packet(SUBACK, 0, struct.pack("!H", mid) + bytes(granted)))
            for topic, (payload, qos) in list(self.retained.items()):
                for pattern in new:
                    if topic_matches(pattern, topic):
                        self._send(s, topic, payload, min(qos, s.subs[pattern]), retain=True)
                        break
        elif kind == UNSUBSCRIBE:
            mid = r.u16()
            while r.pos < len(r.data):
                s.subs.pop(r.string().decode("utf-8"), None)
            s.writer.write(_packet(UNSUBACK, 0, struct.pack("!H", mid)))
        elif kind == PINGREQ:
            s.writer.write(_packet(PINGRESP, 0, b""))
        elif kind in (PUBACK, PUBREC, PUBCOMP):
            if kind == PUBREC:
                s.writer.write(_packet(PUBREL, 0x02, r.take(2)))
        else:
            raise ProtocolError(f"unexpected packet type {kind}")

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if retain:
            if payload:
                self.retained[topic] = (payload, qos)
            else:
                self.retained.pop(topic, None)
        for s in list(self.sessions.values()):
            best = max((q for p, q in s.subs.items() if topic_matches(p, topic)), default=None)
            if best is not None:
                self._send(s, topic, payload, min(qos, best), retain=False)

    def _send(self, s: _Session, topic: str, payload: bytes, qos: int, *, retain: bool) -> None:
        head = _string(topic.encode("utf-8")) + (struct.pack("!H", s.mid()) if qos else b"")
        s.writer.write(_packet(PUBLISH, (qos << 1) | int(retain), head + payload))
