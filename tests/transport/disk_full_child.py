"""Run inside a private mount namespace on a 1 MB tmpfs (see test_transport_disk_full.py): fill the disk
under a live spool and outbox, check acknowledged rows are still deleted and nothing gets two seqs,
then free the space and check everything recovers without a restart. Prints one JSON line of facts."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

from edge.transport import MqttClient
from edge.transport import spool as spool_module
from edge.transport.outbox import Outbox
from edge.transport.spool import Spool, SpoolError, SpoolFullError

TOPIC = "edge/full/predictions"


def fill(path: Path) -> int:
    """Write zeros until the disk is full; returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                written += f.write(b"\0" * 4096)
        except OSError:
            pass
    return written


def send(outbox: Outbox, i: int) -> int | None:
    try:
        return outbox.send(TOPIC, {"i": i, "pad": "x" * 2000}, seq="predictions", key=f"input-{i}")
    except SpoolError as err:
        assert "disk full" in err.what, err.what
        return None


def wait(cond, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def main(disk: str, url: str) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spool_module._RESERVE_RETRY_S = 0.2  # noqa: SLF001 - retry the reserve quickly in this test
    d = Path(disk)
    facts: dict[str, object] = {}
    spool = Spool(d / "spool.db")
    facts["reserve_made"] = (d / "spool.db.reserve").stat().st_size
    client = MqttClient(url, "full", backoff_min=0.1, backoff_max=0.3)
    outbox = Outbox(client, spool)
    seqs: dict[int, int] = {}  # input number -> seq
    for i in range(20):  # the broker is not connected yet: these stay in the spool
        n = send(outbox, i)
        assert n is not None
        seqs[i] = n
    facts["depth_before"] = spool.depth()
    facts["filler"] = fill(d / "filler")
    failed = [i for i in range(20, 30) if send(outbox, i) is None]
    facts["failed_while_full"] = len(failed)
    # The agent's way: wait for space (until shutdown) instead of failing. Stopping ends the wait.
    stop = threading.Event()
    stop.set()
    try:
        outbox.send(TOPIC, {"i": 40}, seq="predictions", key="input-40", retry_full_until=stop)
        facts["stopped_wait_raised"] = False
    except SpoolFullError:
        facts["stopped_wait_raised"] = True
    waited: list[int | None] = []
    waiter = threading.Thread(
        target=lambda: waited.append(
            outbox.send(
                TOPIC, {"i": 40}, seq="predictions", key="input-40", retry_full_until=threading.Event()
            )
        )
    )
    waiter.start()
    # Connect now: the broker acknowledges the 20 spooled messages, which must leave the spool.
    client.start()
    outbox.start()
    assert client.wait_connected(10), client.last_error
    facts["drained_while_full"] = wait(lambda: spool.depth() == 0, 10)
    facts["reserve_given_up"] = not (d / "spool.db.reserve").exists()
    facts["still_failing"] = send(outbox, 30) is None
    facts["waiting_while_full"] = waiter.is_alive()
    (d / "filler").unlink()  # space returns: the same objects work again, no restart
    waiter.join(10)
    facts["waited_seq"] = waited[0] if waited else None
    for i in failed:  # retried until the spool takes them again (it tries its reserve every second)
        deadline = time.monotonic() + 5
        n = send(outbox, i)
        while n is None and time.monotonic() < deadline:
            time.sleep(0.05)
            n = send(outbox, i)
        assert n is not None, f"input {i} still cannot be spooled after space returned"
        seqs[i] = n
    facts["drained_after"] = wait(lambda: spool.depth() == 0, 10)
    # An input spooled before the disk filled whose "done" record was lost comes round again: same seq.
    facts["again"] = [send(outbox, 5), send(outbox, 25), spool.depth()]
    facts["reserve_back"] = (d / "spool.db.reserve").stat().st_size == facts["reserve_made"]
    facts["seqs"] = seqs
    outbox.stop()
    client.stop()
    spool.close()
    facts["restart"] = restart_on_a_full_disk(d)
    print(json.dumps(facts), flush=True)


def restart_on_a_full_disk(d: Path) -> dict[str, object]:
    """The agent starts again while the disk is full: its spool opens (not quarantined as corrupt),
    keeps what it held, refuses new messages and deletes acknowledged ones."""
    with Spool(d / "spool.db") as spool:
        for _ in range(5):
            spool.put(TOPIC, b"x" * 2000)
    fill(d / "filler")
    spool = Spool(d / "spool.db")
    facts: dict[str, object] = {"depth": spool.depth(), "quarantined": spool.quarantined is not None}
    try:
        spool.put(TOPIC, b"y")
        facts["put_refused"] = False
    except SpoolError:
        facts["put_refused"] = True
    spool.ack([m.id for m in spool.pending()])
    facts["drained"] = spool.depth() == 0
    spool.close()
    (d / "filler").unlink()
    return facts


if __name__ == "__main__":
    main(*sys.argv[1:])
