"""MQTT over TLS with a password file, no anonymous access and an ACL (a real mosquitto configured per test)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.transport.client import Message, MqttClient, TLSOptions

from .tls_broker import USERS, SecureBroker, start_secure_broker


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureBroker]:
    b = start_secure_broker(tmp_path / "broker")
    yield b
    b.broker.stop()


def _client(url: str, tls: TLSOptions, name: str) -> MqttClient:
    c = MqttClient(url, name, tls=tls, backoff_min=0.2, backoff_max=0.5)
    c.start()
    return c


def _refused(c: MqttClient, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while c.last_error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not c.connected
    c.stop()
    return c.last_error or ""


def test_right_credentials_connect_over_tls(secure: SecureBroker) -> None:
    c = _client(secure.url("dev1", USERS["dev1"]), TLSOptions(ca_file=str(secure.pki.ca)), "dev1")
    try:
        assert c.wait_connected(10), c.last_error
    finally:
        c.stop()
    assert "s3cret" not in repr(c.url) and "s3cret" not in str(c.url)


def test_anonymous_is_refused_with_a_clear_message(secure: SecureBroker) -> None:
    err = _refused(_client(secure.url(), TLSOptions(ca_file=str(secure.pki.ca)), "anon"))
    assert "not authorized" in err.lower(), err


def test_wrong_password_is_refused_and_never_shown(secure: SecureBroker) -> None:
    c = _client(secure.url("dev1", "hunter2-wrong"), TLSOptions(ca_file=str(secure.pki.ca)), "dev1")
    err = _refused(c)
    # mosquitto 2.0 answers a wrong password with "not authorized" (MQTT 5 reason 0x87), not 0x86.
    assert "bad user name or password" in err or ("not authorized" in err and "password" in err), err
    assert "hunter2" not in err and "hunter2" not in c.url.redacted()


def test_untrusted_server_certificate_is_refused(secure: SecureBroker) -> None:
    err = _refused(
        _client(secure.url("dev1", USERS["dev1"]), TLSOptions(ca_file=str(secure.pki.other_ca)), "dev1")
    )
    assert "certificate" in err and "not trusted" in err, err


def test_plain_mqtt_on_the_tls_port_does_not_connect(secure: SecureBroker) -> None:
    c = MqttClient(
        f"mqtt://dev1:{USERS['dev1']}@127.0.0.1:{secure.port}", "dev1", backoff_min=0.2, backoff_max=0.5
    )
    c.start()
    assert not c.wait_connected(2)
    c.stop()


def test_tls_older_than_1_2_is_refused(secure: SecureBroker) -> None:
    ctx = ssl.create_default_context(cafile=str(secure.pki.ca))
    with warnings.catch_warnings():  # deprecated on purpose: this is the old client we must refuse
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", secure.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw, server_hostname="localhost").do_handshake()
    ok = ssl.create_default_context(cafile=str(secure.pki.ca))
    with socket.create_connection(("127.0.0.1", secure.port), timeout=5) as raw:
        with ok.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_device_publishes_only_where_the_acl_lets_it(secure: SecureBroker) -> None:
    tls = TLSOptions(ca_file=str(secure.pki.ca))
    seen: list[str] = []
    got = threading.Event()
    watcher = _client(secure.url("operator", USERS["operator"]), tls, "operator")
    device = _client(secure.url("dev1", USERS["dev1"]), tls, "dev1")
    try:
        assert watcher.wait_connected(10) and device.wait_connected(10)

        def on_msg(m: Message) -> None:
            seen.append(m.topic)
            if m.topic == "edge/dev1/end":
                got.set()

        watcher.subscribe("edge/#", on_msg)
        time.sleep(0.5)  # SUBACK
        # mosquitto 2.0 drops a client's connection when it publishes outside its ACL: the device's
        # client reconnects by itself, and the denied message never reaches anyone.
        allowed = ("edge/dev1/status", "edge/dev1/end")
        for topic in (
            "edge/dev2/status",
            "edge/dev1/status",
            "other/topic",
            "edge/dev2/cmd",
            "edge/dev1/end",
        ):
            assert device.wait_connected(10), device.last_error
            gen = device.generation
            device.publish(topic, b"x", qos=1)
            deadline = time.monotonic() + 10
            if topic in allowed:
                while topic not in seen and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert topic in seen, (topic, seen)
            else:
                while not (device.generation > gen and device.connected) and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert device.generation > gen, f"the broker accepted {topic}?"
        assert got.wait(10), seen
        time.sleep(0.3)
        assert seen == list(allowed), seen
        # And the device reads its commands but not another device's.
        inbox: list[str] = []
        device.subscribe("edge/dev1/cmd", lambda m: inbox.append(m.topic))
        device.subscribe("edge/dev2/cmd", lambda m: inbox.append(m.topic))
        time.sleep(0.5)
        assert device.wait_connected(10)
        watcher.publish("edge/dev2/cmd", b"{}", qos=1)
        watcher.publish("edge/dev1/cmd", b"{}", qos=1)
        deadline = time.monotonic() + 5
        while not inbox and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert inbox == ["edge/dev1/cmd"], inbox
    finally:
        device.stop()
        watcher.stop()


def test_client_certificate_required(tmp_path: Path) -> None:
    b = start_secure_broker(tmp_path / "broker", require_certificate=True)
    try:
        url = b.url("dev1", USERS["dev1"])
        without = _client(url, TLSOptions(ca_file=str(b.pki.ca)), "dev1")
        assert not without.wait_connected(2)
        without.stop()
        with_cert = _client(
            url,
            TLSOptions(
                ca_file=str(b.pki.ca), cert_file=str(b.pki.client_cert), key_file=str(b.pki.client_key)
            ),
            "dev1",
        )
        try:
            assert with_cert.wait_connected(10), with_cert.last_error
        finally:
            with_cert.stop()
    finally:
        b.broker.stop()


def test_tls_connection_survives_publishing_while_receiving(secure: SecureBroker) -> None:
    # Regression: paho wrote from the publishing thread while the network thread read the same SSL
    # object, which corrupted the TLS stream and dropped the connection every few hundred messages.
    c = _client(secure.url("operator", USERS["operator"]), TLSOptions(ca_file=str(secure.pki.ca)), "op")
    received = []
    try:
        assert c.wait_connected(10)
        c.subscribe("edge/load/#", lambda m: received.append(1))
        time.sleep(0.3)
        sent = 0
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            sent += c.publish("edge/load/x", b"y" * 2000, qos=1) is not None
        assert sent > 1000 and c.generation == 1 and c.connected, (sent, c.generation, c.last_error)
    finally:
        c.stop()
