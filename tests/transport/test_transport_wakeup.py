"""The network loop wakes at once for a publish from another thread; TCP_NODELAY is set.

The loop's select() timeout is raised to 30 s here, so a missing wake-up cannot hide behind a short
timeout: without it every assertion below waits ~30 s and fails, deterministically.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest

from edge.transport import MqttClient, Will
from edge.transport import client as client_module
from tests.support.broker import Mosquitto
from tests.support.mqtt import Capture

SLOW_LOOP_S = 30.0
BOUND_S = 5.0  # far below SLOW_LOOP_S, far above any scheduling noise


@pytest.fixture
def slow_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(client_module, "_LOOP_TIMEOUT_S", SLOW_LOOP_S)
    yield


def _connected(mosquitto: Mosquitto, device: str, **kwargs: object) -> MqttClient:
    client = MqttClient(mosquitto.url, device, backoff_min=0.1, backoff_max=0.5, **kwargs)  # type: ignore[arg-type]
    client.start()
    assert client.wait_connected(10), client.last_error
    return client


def test_publish_from_another_thread_is_written_without_waiting_for_the_loop_timeout(
    mosquitto: Mosquitto, slow_loop: None
) -> None:
    collector = Capture(mosquitto, "edge/dev-w/#")
    client = _connected(mosquitto, "dev-w")
    try:
        time.sleep(0.3)  # let the loop settle into its (30 s) select()
        for n in range(3):  # every publish, not only the first after connecting
            acked = threading.Event()
            client.on_puback(lambda _mid, ev=acked: ev.set())
            started = time.monotonic()
            assert client.publish(f"edge/dev-w/p{n}", b"x", qos=1) is not None
            assert acked.wait(BOUND_S), "PUBACK not received: the publish waited for the loop timeout"
            collector.wait_for(f"edge/dev-w/p{n}", 1, BOUND_S)
            assert time.monotonic() - started < BOUND_S
            time.sleep(0.2)
        # QoS 0 too: nothing acknowledges it, only the subscriber shows it left.
        client.publish("edge/dev-w/q0", b"y", qos=0)
        collector.wait_for("edge/dev-w/q0", 1, BOUND_S)
    finally:
        client.stop()
        collector.close()


def test_stop_is_not_held_up_by_the_loop_timeout(mosquitto: Mosquitto, slow_loop: None) -> None:
    # The offline message (published from this thread) and the DISCONNECT must both go out at once.
    client = _connected(mosquitto, "dev-x", will=Will("edge/dev-x/availability", "offline"))
    collector = Capture(mosquitto, "edge/dev-x/availability")
    try:
        time.sleep(0.3)
        started = time.monotonic()
        client.stop(offline_payload="offline", timeout=SLOW_LOOP_S)
        took = time.monotonic() - started
        assert took < BOUND_S, took
        assert collector.wait_for("edge/dev-x/availability", 1, BOUND_S)[0].payload == b"offline"
    finally:
        collector.close()
    log = (mosquitto.workdir / "mosquitto.log").read_text()
    assert "dev-x disconnected" in log, "a clean DISCONNECT, not a dropped socket"


def test_tcp_nodelay_is_set_on_every_connection(mosquitto: Mosquitto) -> None:
    client = _connected(mosquitto, "dev-n")
    try:
        for _ in range(2):
            gen = client.generation
            paho_client = client._client  # noqa: SLF001 - the socket of the live connection
            assert paho_client is not None
            sock = paho_client.socket()
            assert sock is not None
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            # Reconnect (a broker restart): the new connection's socket is set too.
            mosquitto.stop()
            mosquitto.start()
            deadline = time.monotonic() + 15
            while client.generation == gen and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.wait_connected(10) and client.generation == gen + 1
    finally:
        client.stop()


def test_bare_paho_loop_forever_without_loop_start_has_no_wakeup(mosquitto: Mosquitto) -> None:
    # Why the client calls loop() itself: pins the paho behaviour the fix is about, so a paho
    # upgrade that changes it is noticed here (and the workaround can be revisited).
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bare", protocol=paho.MQTTv5)
    c.connect(mosquitto.host, mosquitto.port)
    c._thread = threading.current_thread()  # noqa: SLF001 - what MqttClient does
    assert c._sockpairW is None  # noqa: SLF001
    c.loop(timeout=0)
    assert c._sockpairW is not None  # noqa: SLF001 - loop() created the wake-up pair
    c.disconnect()
    c.loop(timeout=0)
