"""A reconnecting MQTT client for the device agent (paho-mqtt 2.x underneath).

Why not paho's own ``loop_start()`` + ``reconnect_delay_set()``:

* paho's back-off has no jitter, so a fleet that lost its broker reconnects in lock-step;
* paho keeps QoS 1 messages published while offline in memory and re-sends them on reconnect.
  The agent's durable queue is the on-disk spool (:mod:`edge.transport.outbox`); a second, volatile queue
  would only produce extra duplicates and mid collisions. So :meth:`MqttClient.publish` returns
  ``None`` when not connected, and every connection uses a fresh paho client: nothing survives a
  disconnect except what the spool holds.

The message ids returned by :meth:`MqttClient.publish` and passed to ``on_puback`` callbacks are
unique across reconnects (the connection number is folded in), so a PUBACK that belongs to an old
connection can never acknowledge a message of the new one.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.deferred import is_loaded
from edge.errors import EdgeError
from edge.transport.url import BrokerURL, parse_broker_url

_MID_BITS = 16  # paho mids are 1..65535
_STABLE_S = 10.0  # a connection that lasted this long was healthy: back-off starts over
_LOOP_TIMEOUT_S = 1.0  # select() timeout of the network loop: keep-alive pacing only, never latency


class TLSConfigError(EdgeError):
    """TLS options that cannot work (missing or unreadable CA, certificate or key file)."""


@dataclass(frozen=True)
class TLSOptions:
    """TLS settings for ``mqtts://`` brokers (TLS 1.2 or newer is enforced)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False  # skip certificate and host name checks (self-signed test brokers only)


@dataclass(frozen=True)
class Will:
    """Last Will: what the broker publishes when this client vanishes without a goodbye."""

    topic: str
    payload: bytes | str
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class Message:
    """A received message (MQTT 5 request/response properties included when present)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    correlation_data: bytes | None
    response_topic: str | None


# CONNACK reason codes a user can act on, in words (paho's names are terse).
_REFUSALS = {
    "Bad user name or password": "refused: bad user name or password (check user:pass in the broker URL)",
    "Not authorized": "refused: not authorized (the broker's ACL/password file does not allow this client)",
    "Client identifier not valid": "refused: client id not accepted by the broker (use another --device-id)",
    "Unsupported protocol version": "refused: the broker does not speak this MQTT version (try protocol=4, MQTT 3.1.1)",
    "Server unavailable": "refused: broker unavailable",
    "Banned": "refused: this client is banned by the broker",
}


def publish_properties(values: dict[str, Any]) -> Properties:
    """paho ``Properties`` for a PUBLISH from ``{"CorrelationData": b"..", "ResponseTopic": ".."}``."""
    props = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        try:
            setattr(props, name, value)
        except Exception as err:  # paho raises MQTTException for unknown names and bad types
            raise ValueError(f"invalid MQTT 5 publish property {name}={value!r}: {err}") from None
    return props


def _build_tls_context(tls: TLSOptions) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as err:
        raise TLSConfigError(
            f"cannot use the TLS files (ca_file={tls.ca_file!r}, cert_file={tls.cert_file!r}, "
            f"key_file={tls.key_file!r}): {err}",
            "check the paths exist, are readable and hold PEM data; the key must match the certificate",
        ) from err
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _describe_oserror(err: OSError, url: BrokerURL) -> str:
    where = f"{url.host}:{url.port}"
    if url.tls and isinstance(err, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return (
            f"TLS handshake with {where} failed: connection reset (is it a TLS port? mqtts:// usually "
            f"listens on 8883, plain mqtt:// on 1883)"
        )
    if isinstance(err, ConnectionRefusedError):
        return f"unreachable: connection refused by {where} (is the broker running and listening there?)"
    # No SSL error without ssl loaded: asking would load it in an agent that deferred it (edge.deferred).
    if is_loaded("ssl") and isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate of {where} not trusted: {err.verify_message} (pass the CA file, or insecure for tests)"
    if is_loaded("ssl") and isinstance(err, ssl.SSLError):
        return f"TLS handshake with {where} failed: {err.reason or err} (is it an mqtts:// port?)"
    if isinstance(err, (TimeoutError, OSError)) and "timed out" in str(err):
        return f"unreachable: connecting to {where} timed out (wrong address, firewall or Wi-Fi down?)"
    if err.__class__.__name__ == "gaierror":
        return f"unreachable: host name {url.host!r} cannot be resolved ({err.strerror or err})"
    return f"unreachable: {where}: {err.strerror or err}"


def _set_nodelay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
    # Small packets (a PUBACK, a prediction) must leave at once, not wait for Nagle's algorithm to
    # coalesce them with the next write, which a lone request/response never has (up to 40 ms per hop).
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (a Unix socket): nothing to tune
        pass


class MqttClient:
    """Connects in the background and stays connected; see the module docstring for the design."""

    def __init__(
        self,
        url: BrokerURL | str,
        client_id: str,
        *,
        will: Will | None = None,
        tls: TLSOptions | None = None,
        keepalive: float = 30,
        backoff_min: float = 1.0,
        backoff_max: float = 120.0,
        protocol: int = 5,
        logger: logging.Logger | None = None,
        max_incoming_bytes: int | None = None,
    ) -> None:
        self.url = url if isinstance(url, BrokerURL) else parse_broker_url(url)
        if protocol not in (4, 5):
            raise ValueError(f"protocol must be 4 (MQTT 3.1.1) or 5 (MQTT 5), got {protocol!r}")
        if not 0 < backoff_min <= backoff_max:
            raise ValueError(f"need 0 < backoff_min <= backoff_max, got {backoff_min} and {backoff_max}")
        self.client_id = client_id
        self.will = will
        self.tls = tls if tls is not None else (TLSOptions() if self.url.tls else None)
        self.keepalive = keepalive
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.protocol = protocol
        # MQTT 5 Maximum Packet Size: the broker drops larger messages instead of sending them. paho
        # copies an incoming PUBLISH several times while decoding it, so a 50 MB message would cost
        # ~200 MB before anything could refuse it; this keeps memory bounded by what we accept.
        self.max_incoming_bytes = max_incoming_bytes
        self.log = logger or logging.getLogger("edge.transport")

        self._lock = threading.Lock()
        self._client: paho.Client | None = None
        # The client whose CONNACK was handled: subscribe() goes straight to it. Set under the lock
        # together with the snapshot of subscriptions, so none falls between the two.
        self._live_client: paho.Client | None = None
        self._generation = 0  # number of successful connections so far
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._subs: dict[str, tuple[Callable[[Message], None], int]] = {}
        self._on_connect: list[Callable[[], None]] = []
        self._on_disconnect: list[Callable[[], None]] = []
        self._on_puback: list[Callable[[int], None]] = []
        self._on_refused: list[Callable[[int, str], None]] = []
        self._acked_waiters: dict[int, threading.Event] = {}
        self._last_error: str | None = None
        self._attempt_error = False
        self._short_streak = 0
        self._connected_at = 0.0
        # Built now: a missing CA or key file is a configuration error to report at start-up,
        # not something for the network thread to retry forever.
        self._ssl_context: ssl.SSLContext | None = _build_tls_context(self.tls) if self.tls else None
        #: Seconds slept before each reconnect attempt (most recent last): for logs and tests.
        self.backoff_history: deque[float] = deque(maxlen=64)
        self.connect_attempts = 0
        #: Messages the broker acknowledged with an error reason code (MQTT 5).
        self.rejected = 0
        #: From the broker's CONNACK (MQTT 5), None when it sets no limit.
        self.receive_maximum: int | None = None
        self.maximum_packet_size: int | None = None

    # ------------------------------------------------------------------ registration
    def on_connect(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` in the network thread after every (re)connect, after re-subscribing."""
        self._on_connect.append(callback)

    def on_disconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` in the network thread whenever an established connection is lost."""
        self._on_disconnect.append(callback)

    def on_puback(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(mid)`` when the broker acknowledges a QoS 1 message returned by publish()."""
        self._on_puback.append(callback)

    def on_refused(self, callback: Callable[[int, str], None]) -> None:
        """Call ``callback(mid, reason)`` when the broker acknowledges a message with a refusal
        (MQTT 5 PUBACK reason code, e.g. ``Not authorized`` from an ACL); ``on_puback`` still fires."""
        self._on_refused.append(callback)

    def subscribe(self, topic: str, handler: Callable[[Message], None], qos: int = 1) -> None:
        """Subscribe now (if connected) and again after every reconnect."""
        with self._lock:
            self._subs[topic] = (handler, qos)
            client = self._live_client
        if client is not None:
            client.message_callback_add(topic, self._dispatcher(handler))
            client.subscribe(topic, qos)

    # ------------------------------------------------------------------ state
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def generation(self) -> int:
        """How many times a connection was established (changes on every reconnect)."""
        return self._generation

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt failed or the last connection dropped, in words."""
        return self._last_error

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}", daemon=True)
        self._thread.start()

    def stop(self, offline_payload: bytes | str | None = None, timeout: float = 1.0) -> None:
        """Say goodbye and disconnect: publish ``offline_payload`` on the will topic first (retained, QoS 1).

        ``timeout`` bounds the whole call. A live broker acknowledges within milliseconds; one that
        does not within a second (frozen, half-open link) will not do better later, and the Last Will
        says ``offline`` for us then, so a longer wait would only hold up the process exit.
        """
        deadline = time.monotonic() + timeout
        self._stopping.set()
        # Called from a handler (e.g. a "shutdown" command) the network thread cannot wait for
        # its own PUBACK; the PUBLISH still goes out before the DISCONNECT, in order.
        in_network_thread = threading.current_thread() is self._thread
        if offline_payload is not None and self.will is not None and self.connected:
            done = threading.Event()
            mid = self.publish(self.will.topic, offline_payload, qos=1, retain=True, _waiter=done)
            if in_network_thread:
                pass
            elif mid is None or not done.wait(max(0.0, deadline - time.monotonic())):
                self.log.warning(
                    "could not confirm the offline message on %s; the broker will publish "
                    "the Last Will when it notices the connection is gone",
                    self.will.topic,
                )
        with self._lock:
            client = self._client
        if client is not None:
            try:
                client.disconnect()
            except Exception:  # pragma: no cover - best effort on the way out
                self.log.debug("disconnect failed", exc_info=True)
        if self._thread is not None and not in_network_thread:
            self._thread.join(max(0.1, deadline - time.monotonic()))
        self._thread = None
        self._connected.clear()

    # ------------------------------------------------------------------ publishing
    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
        *,
        _waiter: threading.Event | None = None,
    ) -> int | None:
        """Send now; returns an id for ``on_puback`` (QoS 1), or ``None`` when not connected.

        ``properties`` are MQTT 5 publish properties by paho name, e.g.
        ``{"CorrelationData": b"42", "ResponseTopic": "a/b", "MessageExpiryInterval": 60}``.
        """
        with self._lock:
            client, gen = self._client, self._generation
            if client is None or not self._connected.is_set():
                return None
        props = self._properties(properties) if properties and self.protocol == 5 else None
        limit = self.maximum_packet_size
        if limit is not None:
            data = payload.encode() if isinstance(payload, str) else payload
            # Fixed header (<= 5) + topic (2 + len) + mid (2) + properties: a safe upper bound.
            size = 5 + 2 + len(topic.encode()) + 2 + len(data) + (64 if props is not None else 1)
            if size > limit:
                raise ValueError(
                    f"message of {size} bytes on {topic!r} exceeds the broker's maximum "
                    f"packet size of {limit} bytes"
                )
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            # Dropped connection: paho may have queued it, but this paho client is never reused.
            return None
        token = (gen << _MID_BITS) | info.mid
        if _waiter is not None:
            with self._lock:
                self._acked_waiters[token] = _waiter
            if info.is_published():  # the PUBACK may have beaten us here
                _waiter.set()
        return token

    def _connect_properties(self) -> Properties | None:
        if self.protocol != 5 or self.max_incoming_bytes is None:
            return None
        props = Properties(PacketTypes.CONNECT)
        props.MaximumPacketSize = self.max_incoming_bytes
        return props

    @staticmethod
    def _properties(values: dict[str, Any]) -> Properties:
        return publish_properties(values)

    # ------------------------------------------------------------------ network thread
    def _new_paho(self) -> paho.Client:
        proto = paho.MQTTv5 if self.protocol == 5 else paho.MQTTv311
        kwargs: dict[str, Any] = {"reconnect_on_failure": False}
        if proto == paho.MQTTv311:
            kwargs["clean_session"] = True
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=proto, **kwargs)
        # The outbox bounds what is in flight; paho must not hold messages back or drop them.
        c.max_inflight_messages_set(0)
        c.max_queued_messages_set(0)
        if self.url.username is not None:
            c.username_pw_set(self.url.username, self.url.password)
        if self.will is not None:
            c.will_set(self.will.topic, self.will.payload, self.will.qos, self.will.retain)
        if self.tls is not None:
            c.tls_set_context(self._tls_context())
        gen = self._generation + 1  # the number this connection gets if it succeeds
        c.on_connect = lambda cl, ud, flags, rc, props: self._handle_connect(cl, rc, gen, props)
        c.on_disconnect = lambda cl, ud, flags, rc, props: self._handle_disconnect(cl, rc)
        c.on_publish = lambda cl, ud, mid, rc, props: self._handle_puback(gen, mid, rc)
        c.on_socket_open = _set_nodelay
        return c

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            assert self.tls is not None
            self._ssl_context = _build_tls_context(self.tls)
        return self._ssl_context

    def _next_delay(self, failures: int) -> float:
        # Exponential back-off with jitter: the ceiling doubles per failure up to backoff_max, and the
        # actual wait is drawn from its upper half so a fleet does not reconnect in lock-step.
        ceiling = min(self.backoff_max, self.backoff_min * (2 ** min(failures, 32)))
        return random.uniform(max(self.backoff_min, ceiling / 2), ceiling)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                client = self._new_paho()
            except Exception as err:  # never let the network thread die
                self.log.exception("cannot set up the MQTT client")
                self._set_error(f"cannot set up the MQTT client: {err}")
                self._stopping.wait(self.backoff_max)
                continue
            with self._lock:
                self._client = client
            self.connect_attempts += 1
            gen_before = self._generation
            self._attempt_error = False
            # paho writes from the publishing thread when it believes no loop thread exists; over TLS
            # that races this thread's SSL_read on the same SSL object and corrupts the stream
            # ("Bad socket read/write", random disconnects). Declared as the loop thread (what
            # loop_start() does), paho queues every packet, CONNECT included, for this thread to write.
            client._thread = threading.current_thread()  # noqa: SLF001
            try:
                client.connect(
                    self.url.host,
                    self.url.port,
                    keepalive=int(max(1, self.keepalive)),
                    properties=self._connect_properties(),
                )
            except (OSError, ValueError) as err:
                msg = _describe_oserror(err, self.url) if isinstance(err, OSError) else str(err)
                self._set_error(msg)
            else:
                if self._stopping.is_set():  # stop() may have looked at the previous client
                    client.disconnect()
                try:
                    self._loop(client)
                except Exception as err:  # paho bug or callback escape: never kill the thread
                    self.log.exception("MQTT network loop failed")
                    self._set_error(f"network loop failed: {err}")
            if self._connected.is_set():  # loop ended without on_disconnect (socket error)
                self._handle_disconnect(client, None)
            if self._generation == gen_before and not self._attempt_error and not self._stopping.is_set():
                hint = "" if self.url.tls else " (is it a TLS port? then use mqtts://)"
                self._set_error(
                    f"no MQTT answer from {self.url.host}:{self.url.port}: the connection "
                    f"closed before the broker accepted it{hint}"
                )
            with self._lock:
                self._client = None
                self._live_client = None
            if self._stopping.is_set():
                break
            if self._generation == gen_before:
                failures += 1
            else:
                # A connection that the broker closes soon after accepting it, again and again (two
                # clients with one id taking each other over, an ACL kick) must not turn into a
                # reconnect storm: from the second short-lived connection in a row, keep backing off.
                lived = time.monotonic() - self._connected_at
                self._short_streak = self._short_streak + 1 if lived < _STABLE_S else 0
                failures = max(0, self._short_streak - 1)
                if self._short_streak >= 2 and not self._stopping.is_set():
                    self._set_error(
                        f"connection closed {self._short_streak} times in a row soon after connecting "
                        f"(last: {self._last_error or 'connection lost'}); is another client using the same "
                        f"client id {self.client_id!r} (a second agent with this device id?), or does the "
                        "broker refuse this client?"
                    )
            delay = self._next_delay(failures)
            self.backoff_history.append(delay)
            self.log.info(
                "MQTT %s not connected (%s); retrying in %.1f s",
                self.url.redacted(),
                self._last_error or "connection lost",
                delay,
            )
            self._stopping.wait(delay)

    @staticmethod
    def _loop(client: paho.Client) -> None:
        # paho's loop() (unlike loop_forever() without loop_start()) creates the socket pair that a
        # publish() from another thread writes to, so select() wakes and the packet goes out at once
        # instead of after the timeout. The timeout only paces keep-alive checks.
        while client.loop(timeout=_LOOP_TIMEOUT_S) == paho.MQTT_ERR_SUCCESS:
            pass

    def _set_error(self, message: str) -> None:
        # Reason strings and OS errors never carry the password; the URL is always shown redacted.
        if self.url.password:
            message = message.replace(self.url.password, "***")
        self._attempt_error = True
        if message != self._last_error:
            self.log.warning("MQTT %s: %s", self.url.redacted(), message)
        self._last_error = message

    def _handle_connect(self, client: paho.Client, reason: Any, gen: int, props: Any = None) -> None:
        if reason.is_failure:
            text = str(reason)
            self._set_error(_REFUSALS.get(text, f"refused by the broker: {text}"))
            return
        # MQTT 5 brokers announce how many un-acked QoS 1 messages they accept and the largest
        # packet; exceeding either gets us disconnected, and replaying would do it again forever.
        self.receive_maximum = int(getattr(props, "ReceiveMaximum", 0) or 0) or None
        self.maximum_packet_size = int(getattr(props, "MaximumPacketSize", 0) or 0) or None
        with self._lock:
            self._generation = gen
            self._live_client = client
            subs = list(self._subs.items())
        for topic, (handler, _qos) in subs:
            client.message_callback_add(topic, self._dispatcher(handler))
        if subs:
            client.subscribe([(topic, qos) for topic, (_h, qos) in subs])
        self._last_error = None
        self._connected_at = time.monotonic()
        self._connected.set()
        self.log.info("MQTT connected to %s as %s", self.url.redacted(), self.client_id)
        for cb in list(self._on_connect):
            self._call(cb)

    def _handle_disconnect(self, client: paho.Client, reason: Any) -> None:
        with self._lock:
            if client is not self._client:
                return
            was = self._connected.is_set()
            self._connected.clear()
            self._live_client = None
        if was and not self._stopping.is_set():
            failed = reason is not None and getattr(reason, "is_failure", False)
            if failed and getattr(reason, "value", None) == 0x8E:  # Session taken over (MQTT 5)
                self._set_error(
                    f"connection taken over: another client connected with the same client id "
                    f"{self.client_id!r} (is a second agent running with this device id?)"
                )
            else:
                self._set_error(f"connection lost: {reason}" if failed else "connection lost")
        # When not connected yet, the CONNACK refusal (already recorded) says more than the close.
        if was:
            for cb in list(self._on_disconnect):
                self._call(cb)

    def _handle_puback(self, gen: int, mid: int, reason: Any = None) -> None:
        token = (gen << _MID_BITS) | mid
        if reason is not None and getattr(reason, "is_failure", False):
            # The broker received the message and refused it (MQTT 5, e.g. an ACL): sending it
            # again cannot help, so it still counts as acknowledged, but say so.
            self.rejected += 1
            self.log.warning("broker refused a message (mid %d): %s", mid, reason)
            for refused_cb in list(self._on_refused):
                self._call(refused_cb, token, str(reason))
        with self._lock:
            waiter = self._acked_waiters.pop(token, None)
        if waiter is not None:
            waiter.set()
        for cb in list(self._on_puback):
            self._call(cb, token)

    def _dispatcher(self, handler: Callable[[Message], None]) -> Callable[..., None]:
        def dispatch(_client: paho.Client, _ud: Any, msg: paho.MQTTMessage) -> None:
            props = getattr(msg, "properties", None)
            corr = getattr(props, "CorrelationData", None) if props is not None else None
            resp = getattr(props, "ResponseTopic", None) if props is not None else None
            message = Message(
                topic=msg.topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                retain=bool(msg.retain),
                correlation_data=bytes(corr) if corr is not None else None,
                response_topic=resp,
            )
            self._call(handler, message)

        return dispatch

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self.log.exception(
                "MQTT callback %s failed (ignored; the connection stays up)", getattr(fn, "__qualname__", fn)
            )
