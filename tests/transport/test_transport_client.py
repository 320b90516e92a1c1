from __future__ import annotations

import getpass
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.transport import Message, MqttClient, TLSOptions, Will
from edge.transport.client import TLSConfigError
from tests.support.broker import Mosquitto, free_port
from tests.transport._helpers import read_until, start_child
from tests.transport.tls_broker import make_pki


def sub(broker: Mosquitto, topic: str, count: int = 1, wait: int = 10) -> list[str]:
    """``mosquitto_sub -C count -W wait -v``: the real command-line client, retained flag first."""
    out = subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-t",
            topic,
            "-C",
            str(count),
            "-W",
            str(wait),
            "-F",
            "%r %t %p",
        ],
        capture_output=True,
        text=True,
        timeout=wait + 5,
    )
    return out.stdout.splitlines()


def retained(broker: Mosquitto, topic: str, timeout: float = 15) -> str:
    """The payload a fresh ``mosquitto_sub`` gets as *retained* message once it settles (polls)."""
    deadline = time.monotonic() + timeout
    last: list[str] = []
    while time.monotonic() < deadline:
        last = sub(broker, topic, wait=2)
        if last and last[0].startswith("1 "):
            return last[0].split(" ", 2)[2]
        time.sleep(0.1)
    raise AssertionError(f"no retained message on {topic}: {last}")


def pub(broker: Mosquitto, topic: str, payload: str) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-t", topic, "-m", payload, "-q", "1"],
        check=True,
        timeout=10,
    )


def test_publish_subscribe_and_request_properties(mosquitto: Mosquitto) -> None:
    got: list[Message] = []
    client = MqttClient(mosquitto.url, "dev-a", backoff_min=0.1, backoff_max=0.5)

    def handler(msg: Message) -> None:
        if msg.payload == b"boom":
            raise RuntimeError("handler bug")  # must be logged, never kill the network thread
        got.append(msg)

    client.subscribe("edge/dev-a/infer/#", handler)
    client.subscribe("edge/dev-a/infer", handler)
    assert client.publish("x/y", b"1") is None, "not started: nothing may be queued"
    client.start()
    try:
        assert client.wait_connected(10), client.last_error
        time.sleep(0.2)  # SUBACK
        requester = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="req", protocol=paho.MQTTv5)
        requester.connect(mosquitto.host, mosquitto.port)
        requester.loop_start()
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = b"req-42"
        props.ResponseTopic = "edge/dev-a/answers"
        requester.publish("edge/dev-a/infer", b"boom", qos=1).wait_for_publish(5)
        requester.publish("edge/dev-a/infer", b"\x89PNG", qos=1, properties=props).wait_for_publish(5)
        requester.loop_stop()
        requester.disconnect()
        pub(mosquitto, "edge/dev-a/infer/abc", "v311")
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        by_topic = {m.topic: m for m in got}
        m = by_topic["edge/dev-a/infer"]
        assert (m.payload, m.correlation_data, m.response_topic, m.qos) == (
            b"\x89PNG",
            b"req-42",
            "edge/dev-a/answers",
            1,
        )
        assert by_topic["edge/dev-a/infer/abc"].payload == b"v311"
        assert by_topic["edge/dev-a/infer/abc"].correlation_data is None
        # QoS 1 publish is acknowledged through on_puback with the id publish() returned.
        acked: list[int] = []
        done = threading.Event()
        client.on_puback(lambda mid: (acked.append(mid), done.set()))
        mid = client.publish("edge/dev-a/status", '{"ok":true}', qos=1, retain=True)
        assert mid is not None and done.wait(5) and acked == [mid]
        assert sub(mosquitto, "edge/dev-a/status") == ['1 edge/dev-a/status {"ok":true}']
    finally:
        client.stop()
    assert not client.connected


def test_reconnects_resubscribes_and_calls_on_connect_again(mosquitto: Mosquitto) -> None:
    got: list[bytes] = []
    connects: list[int] = []
    client = MqttClient(mosquitto.url, "dev-b", backoff_min=0.1, backoff_max=0.3)
    client.subscribe("edge/dev-b/cmd", lambda m: got.append(m.payload))
    client.on_connect(lambda: connects.append(client.generation))
    client.on_connect(lambda: client.publish("edge/dev-b/availability", "online", qos=1, retain=True))
    client.start()
    try:
        assert client.wait_connected(10)
        late: list[bytes] = []
        client.subscribe("edge/dev-b/late", lambda m: late.append(m.payload))  # while connected
        deadline = time.monotonic() + 5
        while not late and time.monotonic() < deadline:
            pub(mosquitto, "edge/dev-b/late", "hello")
            time.sleep(0.1)
        assert late and late[0] == b"hello"
        mosquitto.kill()
        deadline = time.monotonic() + 5
        while client.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not client.connected
        assert client.publish("edge/dev-b/x", b"1", qos=1) is None
        # "connection lost", or already the refused retry when the machine is slow
        assert client.last_error and ("lost" in client.last_error or "refused" in client.last_error)
        mosquitto.start()  # same port; the retained 'online' died with the broker
        assert client.wait_connected(10), client.last_error
        assert retained(mosquitto, "edge/dev-b/availability") == "online"
        pub(mosquitto, "edge/dev-b/cmd", "ping")
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == [b"ping"], "subscription not restored after reconnect"
        assert connects == [1, 2]
        assert client.last_error is None
    finally:
        client.stop()


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    port = free_port()  # nothing listens there
    client = MqttClient(f"mqtt://127.0.0.1:{port}", "dev-c", backoff_min=0.05, backoff_max=0.4)
    started = time.monotonic()
    client.start()
    try:
        deadline = time.monotonic() + 20
        while len(client.backoff_history) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        delays = list(client.backoff_history)[:10]
        elapsed = time.monotonic() - started
    finally:
        client.stop()
    assert len(delays) == 10
    assert all(0.05 <= d <= 0.4 for d in delays), delays
    assert delays[0] <= 0.1  # first retry: 1-2x the minimum
    assert delays[3] > 0.2 and delays[-1] > 0.2, delays  # grew towards the cap...
    assert len(set(delays[5:])) > 1, "no jitter"  # ...with jitter, not in lock-step
    assert elapsed >= sum(delays[:9])  # the waits really happened
    assert client.connect_attempts >= 10
    assert "refused" in (client.last_error or "") and str(port) in (client.last_error or "")


def test_bad_credentials_are_explained_and_redacted(tmp_path: Path) -> None:
    pwfile = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(pwfile), "alice", "right"], check=True, capture_output=True
    )
    pwfile.chmod(0o600)
    # `user`: when the tests run as root, mosquitto would drop to user 'mosquitto' and lose the file.
    broker = Mosquitto(
        workdir=tmp_path / "b", extra_conf=f"password_file {pwfile}\nuser {getpass.getuser()}\n"
    )
    broker.workdir.mkdir()
    with broker:
        bad = MqttClient(
            f"mqtt://alice:wrong-secret@{broker.host}:{broker.port}",
            "dev-d",
            backoff_min=0.1,
            backoff_max=0.2,
        )
        bad.start()
        deadline = time.monotonic() + 10
        while bad.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        bad.stop()
        assert not bad.connected
        assert "bad user name or password" in (bad.last_error or "") or "not authorized" in (
            bad.last_error or ""
        )
        assert "wrong-secret" not in (bad.last_error or "") and "wrong-secret" not in repr(bad.url)
        good = MqttClient(f"mqtt://alice:right@{broker.host}:{broker.port}", "dev-e", protocol=4)
        good.start()
        try:
            assert good.wait_connected(10), good.last_error
        finally:
            good.stop()


def test_last_will_offline_when_process_is_sigkilled(mosquitto: Mosquitto) -> None:
    proc = start_child("lwt", mosquitto.url, "dev-f")
    read_until(proc, lambda line: line == "connected", timeout=30)
    assert retained(mosquitto, "edge/dev-f/availability") == "online"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    seen = ""
    while time.monotonic() < deadline and seen != "offline":
        seen = retained(mosquitto, "edge/dev-f/availability")
    assert seen == "offline"


def test_stop_publishes_offline_and_disconnects_cleanly(mosquitto: Mosquitto) -> None:
    client = MqttClient(mosquitto.url, "dev-g", will=Will("edge/dev-g/availability", "offline"))
    client.on_connect(lambda: client.publish("edge/dev-g/availability", "online", qos=1, retain=True))
    client.start()
    assert client.wait_connected(10)
    assert retained(mosquitto, "edge/dev-g/availability") == "online"
    started = time.monotonic()
    client.stop(offline_payload="offline", timeout=5)
    assert time.monotonic() - started < 5
    assert not client.connected
    assert sub(mosquitto, "edge/dev-g/availability") == ["1 edge/dev-g/availability offline"]
    log = (mosquitto.workdir / "mosquitto.log").read_text()
    assert "dev-g disconnected" in log or "Client dev-g disconnected" in log


def test_half_open_connection_is_detected_by_keepalive(mosquitto: Mosquitto) -> None:
    # A frozen broker looks like Wi-Fi that dropped without a TCP reset: only keep-alive notices.
    client = MqttClient(mosquitto.url, "dev-h", keepalive=1, backoff_min=0.1, backoff_max=0.3)
    client.start()
    try:
        assert client.wait_connected(10)
        assert mosquitto.proc is not None
        mosquitto.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        while client.connected and time.monotonic() - started < 10:
            time.sleep(0.05)
        noticed = time.monotonic() - started
        mosquitto.proc.send_signal(signal.SIGCONT)
        assert not client.connected and noticed < 5, noticed
        assert client.wait_connected(10), client.last_error
        assert client.generation == 2
    finally:
        client.stop()


def test_tls_broker(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    ca, cert, key = pki.ca, pki.server_cert, pki.server_key
    tls_port = free_port()
    broker = Mosquitto(
        workdir=tmp_path / "b",
        extra_conf=(
            f"user {getpass.getuser()}\nlistener {tls_port} 127.0.0.1\n"
            f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\ntls_version tlsv1.2\n"
        ),
    )
    broker.workdir.mkdir()
    with broker:
        url = f"mqtts://127.0.0.1:{tls_port}"
        good = MqttClient(url, "dev-tls", tls=TLSOptions(ca_file=str(ca)))
        done = threading.Event()
        good.on_puback(lambda mid: done.set())
        good.start()
        try:
            assert good.wait_connected(10), good.last_error
            assert good.publish("edge/dev-tls/status", "{}", qos=1) is not None and done.wait(5)
            tls_sock = good._client.socket() if good._client else None  # noqa: SLF001 - an SSLSocket
            assert tls_sock is not None and tls_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            good.stop()

        untrusted = MqttClient(url, "dev-tls2", backoff_min=0.2, backoff_max=0.4)  # system CAs only
        untrusted.start()
        deadline = time.monotonic() + 10
        while untrusted.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        untrusted.stop()
        assert not untrusted.connected
        assert "not trusted" in (untrusted.last_error or ""), untrusted.last_error

        insecure = MqttClient(url, "dev-tls3", tls=TLSOptions(insecure=True))
        insecure.start()
        try:
            assert insecure.wait_connected(10), insecure.last_error
        finally:
            insecure.stop()

        plain_port_over_tls = MqttClient(
            f"mqtts://127.0.0.1:{broker.port}",
            "dev-tls4",
            tls=TLSOptions(ca_file=str(ca)),
            backoff_min=0.2,
            backoff_max=0.4,
        )
        plain_port_over_tls.start()
        deadline = time.monotonic() + 10
        while plain_port_over_tls.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        plain_port_over_tls.stop()
        assert "TLS" in (plain_port_over_tls.last_error or ""), plain_port_over_tls.last_error

        plain_over_tls_port = MqttClient(
            f"mqtt://127.0.0.1:{tls_port}", "dev-tls5", keepalive=2, backoff_min=0.2, backoff_max=0.4
        )
        plain_over_tls_port.start()
        deadline = time.monotonic() + 15
        while plain_over_tls_port.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        plain_over_tls_port.stop()
        assert "mqtts://" in (plain_over_tls_port.last_error or ""), plain_over_tls_port.last_error


def test_missing_tls_files_fail_at_construction(tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError) as info:
        MqttClient("mqtts://127.0.0.1", "dev-x", tls=TLSOptions(ca_file=str(tmp_path / "nope.pem")))
    assert "nope.pem" in info.value.what and info.value.fix
    pki = make_pki(tmp_path / "pki")
    with pytest.raises(TLSConfigError):
        MqttClient(
            "mqtts://127.0.0.1",
            "dev-x",
            tls=TLSOptions(
                ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(tmp_path / "missing.key")
            ),
        )


def test_stop_from_a_message_handler(mosquitto: Mosquitto) -> None:
    # e.g. a "shutdown" command: stop() runs in the network thread and must neither hang nor raise.
    client = MqttClient(mosquitto.url, "dev-i", will=Will("edge/dev-i/availability", "offline"))
    stopped = threading.Event()

    def handler(_msg: Message) -> None:
        client.stop(offline_payload="offline", timeout=2)
        stopped.set()

    client.subscribe("edge/dev-i/cmd", handler)
    client.on_connect(lambda: client.publish("edge/dev-i/availability", "online", qos=1, retain=True))
    client.start()
    assert client.wait_connected(10)
    assert retained(mosquitto, "edge/dev-i/availability") == "online"
    started = time.monotonic()
    pub(mosquitto, "edge/dev-i/cmd", "shutdown")
    assert stopped.wait(5) and time.monotonic() - started < 2
    assert retained(mosquitto, "edge/dev-i/availability") == "offline"
    time.sleep(0.3)
    assert not client.connected


def test_duplicate_client_id_is_explained_and_backs_off(mosquitto: Mosquitto) -> None:
    a = MqttClient(mosquitto.url, "same-id", backoff_min=0.05, backoff_max=0.4)
    b = MqttClient(mosquitto.url, "same-id", backoff_min=0.05, backoff_max=0.4)
    a.start()
    assert a.wait_connected(10)
    b.start()
    try:
        deadline = time.monotonic() + 10
        while (
            "same client id" not in (a.last_error or "") + (b.last_error or "")
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        text = (a.last_error or "") + (b.last_error or "")
        # mosquitto 2.0.11 just closes the old connection; newer brokers say "session taken over".
        assert "same client id 'same-id'" in text, text
        time.sleep(2)
        # Without growing back-off they would take each other over every 50 ms.
        assert a.generation + b.generation < 30, (a.generation, b.generation)
    finally:
        a.stop()
        b.stop()
