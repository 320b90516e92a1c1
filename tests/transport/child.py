"""Child processes the transport tests SIGKILL: they must leave nothing inconsistent behind."""

from __future__ import annotations

import logging
import sys
import time

from edge.transport import MqttClient, Will
from edge.transport.outbox import Outbox
from edge.transport.spool import Spool


def seq(spool_path: str) -> None:
    """Take sequence numbers and spool a message for each, printing each number once committed."""
    spool = Spool(spool_path)
    while True:
        _, n = spool.put_sequenced("edge/t/predictions", lambda n: b'{"seq":%d}' % n)
        print(n, flush=True)


def lwt(url: str, device: str) -> None:
    """Connect with a Last Will, say online (retained), then idle until killed."""
    client = MqttClient(url, device, will=Will(f"edge/{device}/availability", "offline"), keepalive=5)
    client.on_connect(lambda: client.publish(f"edge/{device}/availability", "online", qos=1, retain=True))
    client.start()
    if not client.wait_connected(10):
        sys.exit(f"not connected: {client.last_error}")
    print("connected", flush=True)
    while True:
        time.sleep(1)


def outbox(url: str, spool_path: str, device: str, total: str, rate: str) -> None:
    """Publish predictions-like messages with seq 1..total through an Outbox, at most ``rate`` per second."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    client = MqttClient(
        url, device, will=Will(f"edge/{device}/availability", "offline"), backoff_min=1.5, backoff_max=2.0
    )
    spool = Spool(spool_path)
    box = Outbox(client, spool, max_inflight=20)
    box.start()
    client.start()
    client.wait_connected(10)
    print("started", flush=True)
    n = 0
    period = 1.0 / float(rate)
    while n < int(total):
        n = (
            box.send(
                f"edge/{device}/predictions",
                {"device": device, "latency_ms": {"total": 1.0}},
                seq="predictions",
            )
            or 0
        )
        print(f"sent {n}", flush=True)
        time.sleep(period)
    ok = box.flush(30)
    print(f"flushed {ok} {box.stats()}", flush=True)
    box.stop()
    client.stop(offline_payload="offline")


if __name__ == "__main__":
    {"seq": seq, "lwt": lwt, "outbox": outbox}[sys.argv[1]](*sys.argv[2:])
