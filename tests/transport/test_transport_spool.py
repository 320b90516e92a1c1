from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from edge.transport.spool import Spool, SpoolError
from tests.transport._helpers import read_until, start_child


def test_fifo_ack_and_attempts(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        ids = [spool.put(f"t/{i}", b"p%d" % i, qos=1, retain=i == 2) for i in range(5)]
        assert ids == sorted(ids)
        assert spool.depth() == 5
        first = spool.pending(limit=3)
        assert [m.topic for m in first] == ["t/0", "t/1", "t/2"]
        assert first[2].retain and not first[0].retain
        assert [m.payload for m in spool.pending(limit=2, after_id=ids[2])] == [b"p3", b"p4"]
        spool.mark_attempted([ids[0], ids[0], ids[1]])
        attempts = {m.id: m.attempts for m in spool.pending()}
        assert attempts[ids[0]] == 2 and attempts[ids[1]] == 1 and attempts[ids[2]] == 0
        spool.ack([ids[0], ids[3], 999_999])
        assert [m.id for m in spool.pending()] == [ids[1], ids[2], ids[4]]
        assert spool.depth() == 3
        assert spool.size_bytes() == sum(len(m.topic) + len(m.payload) for m in spool.pending())
        assert spool.dropped() == 0


def test_newest_id_follows_puts_and_reopen(tmp_path: Path) -> None:
    """The outbox skips its query when its cursor is at newest_id(): it must be the last id stored,
    also after acks, sequenced puts and a reopen (rows left by an earlier run)."""
    with Spool(tmp_path / "s.db") as spool:
        assert spool.newest_id() == spool.last_id() == 0
        a = spool.put("t/a", b"a", qos=1)
        spool.put_sequenced("t/b", lambda n: b"b%d" % n, name="p", qos=1, key="k")
        assert spool.newest_id() == spool.last_id() == a + 1
        spool.ack([a, a + 1])
        assert spool.newest_id() == a + 1 and spool.depth() == 0
        spool.put_sequenced("t/b", lambda n: b"b%d" % n, name="p", qos=1, key="k")  # seen: nothing stored
        assert spool.newest_id() == a + 1
        b = spool.put("t/c", b"c", qos=1)
    with Spool(tmp_path / "s.db") as spool:
        assert spool.newest_id() == spool.last_id() == b
        assert [m.id for m in spool.pending(after_id=0)] == [b]


def test_byte_limit_drops_oldest_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path, max_bytes=1000) as spool:
        for i in range(25):
            spool.put("t/x", b"%03d" % i + b"." * 97)  # 3 + 100 = 103 bytes each
        assert spool.size_bytes() <= 1000
        kept = [int(m.payload[:3]) for m in spool.pending()]
        assert kept == list(range(25 - len(kept), 25)), "the oldest must go first"
        assert len(kept) == 1000 // 103
        assert spool.dropped() == 25 - len(kept)
        with pytest.raises(SpoolError, match="larger than the whole spool"):
            spool.put("t/x", b"x" * 2000)
        assert spool.depth() == len(kept)
    with Spool(path, max_bytes=1000) as again:  # counters and sizes survive a reopen
        assert again.dropped() == 25 - len(kept)
        assert again.size_bytes() == 103 * len(kept)


def test_age_limit_drops_old_messages(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path, max_age_s=0.3) as spool:
        for _ in range(3):
            spool.put("t/old", b"x")
        time.sleep(0.45)
        spool.put("t/new", b"y")
        assert [m.topic for m in spool.pending()] == ["t/new"]
        assert spool.dropped() == 3
    time.sleep(0.45)
    with Spool(path, max_age_s=0.3) as again:  # also expired when opening
        assert again.depth() == 0
        assert again.dropped() == 4


def test_seq_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path) as spool:
        assert [spool.next_seq() for _ in range(3)] == [1, 2, 3]
        assert spool.next_seq("other") == 1
        _, n = spool.put_sequenced("t", lambda n: b"%d" % n)
        assert n == 4 and spool.pending()[-1].payload == b"4"
    with Spool(path) as spool:
        assert spool.next_seq() == 5
        assert spool.next_seq("other") == 2


def test_seq_and_messages_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    proc = start_child("seq", str(path))
    lines = read_until(proc, lambda line: line.isdigit() and int(line) >= 300, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    printed = [int(x) for x in lines if x.isdigit()]
    with Spool(path) as spool:
        payloads = [int(m.payload.split(b":")[1].rstrip(b"}")) for m in spool.pending(limit=1_000_000)]
        # Every number the child saw committed is in the spool, with no gap from 1 to the last one.
        assert payloads[: len(printed)] == printed
        assert payloads == list(range(1, len(payloads) + 1))
        after = spool.next_seq()
        assert after == payloads[-1] + 1
        assert after > max(printed)
        assert spool.depth() == len(payloads)


def test_not_a_database_is_a_clear_error_and_left_alone(tmp_path: Path) -> None:
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolError) as info:
        Spool(bad)
    assert str(bad) in info.value.what and "not an SQLite database" in info.value.what
    assert "new file" in info.value.fix
    assert bad.read_bytes() == b"this is not a database" * 100
    with Spool(tmp_path / "ok.db"):  # the lock of the failed attempt was released
        pass


@pytest.mark.parametrize("damage", ["pages", "counters"])
def test_corrupt_spool_is_quarantined_and_seq_still_increases(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "s.db"
    with Spool(path) as spool:
        for _ in range(300):
            spool.put("edge/d/predictions", b"x" * 200)
        last = max(spool.next_seq() for _ in range(7))
    raw = bytearray(path.read_bytes())
    if damage == "pages":
        raw[4096 * 8 : 4096 * 11] = b"\xde\xad" * (4096 * 3 // 2)  # message pages: counters still readable
    else:
        raw[100 : 4096 * 12] = b"\xff" * (4096 * 12 - 100)  # the schema itself
    path.write_bytes(bytes(raw))
    with Spool(path) as spool:
        assert spool.quarantined is not None and spool.quarantined.exists()
        assert spool.depth() == 0
        n = spool.next_seq()
        assert n > last
        if damage == "pages":
            assert n == last + 1, "salvaged counters continue exactly"
        spool.put("t", b"y")
    with Spool(path) as spool:  # the new file is healthy
        assert spool.quarantined is None and spool.depth() == 1 and spool.next_seq() == n + 1


def test_one_process_per_spool(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path) as a, Spool(path) as b:  # same process: allowed (one lock for both)
        a.put("t", b"1")
        assert [m.payload for m in b.pending()] == [b"1"]
    proc = start_child("seq", str(path))
    try:
        read_until(proc, lambda line: line.isdigit(), timeout=60)
        with pytest.raises(SpoolError, match=f"in use by another process \\(pid {proc.pid}\\)"):
            Spool(path)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Spool(path) as spool:  # the kernel dropped the lock with the process
        assert spool.depth() >= 2


def test_two_connections_share_the_file(tmp_path: Path) -> None:
    # WAL lets a reader (e.g. a metrics scraper) look while the agent writes.
    path = tmp_path / "s.db"
    with Spool(path) as spool:
        spool.put("t", b"x")
        reader = sqlite3.connect(path)
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reader.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 1
        reader.close()


def test_properties_round_trip_and_old_spools_are_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,
            qos INTEGER NOT NULL, retain INTEGER NOT NULL, created REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, historical INTEGER NOT NULL DEFAULT 0, size INTEGER NOT NULL);
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO counters VALUES ('seq:predictions', 41);
    """)
    db.execute(
        "INSERT INTO messages (topic, payload, qos, retain, created, size) VALUES ('t', x'01', 1, 0, ?, 2)",
        (time.time(),),
    )
    db.commit()
    db.close()
    with Spool(path) as spool:
        assert spool.quarantined is None
        assert [(m.payload, m.properties) for m in spool.pending()] == [(b"\x01", None)]
        props = {
            "CorrelationData": b"\x00\xffid",
            "ResponseTopic": "a/b",
            "UserProperty": [("k", "v")],
            "MessageExpiryInterval": 60,
        }
        spool.put("t2", b"x", properties=props)
        assert spool.pending()[-1].properties == props
        assert spool.next_seq() == 42


def test_synchronous_mode(tmp_path: Path) -> None:
    with Spool(tmp_path / "full.db", synchronous="full") as spool:
        assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        spool.put("t", b"x")
    with Spool(tmp_path / "normal.db") as spool:
        assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with pytest.raises(SpoolError, match="NORMAL or FULL"):
        Spool(tmp_path / "x.db", synchronous="OFF")


def test_an_input_handled_twice_keeps_its_first_seq(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent spools a file's prediction, then cannot record the file as done (disk full, crash):
    # at the next start the file is handled again. Its key brings back the first seq; nothing new is
    # stored, so subscribers never see one image under two numbers.
    path = tmp_path / "s.db"
    with Spool(path) as spool:
        mid, first = spool.put_sequenced("t", lambda n: b"%d" % n, key="cat.jpg\x0012\x00999")
        assert (mid > 0, first) == (True, 1)
        ack_id = spool.pending()[0].id
        spool.ack([ack_id])  # already delivered: the key outlives the message
    with Spool(path) as spool:  # the next start
        assert spool.put_sequenced("t", lambda n: b"%d" % n, key="cat.jpg\x0012\x00999") == (0, 1)
        assert spool.depth() == 0
        # The same name with another size or mtime is another input; another counter has its own keys.
        assert spool.put_sequenced("t", lambda n: b"%d" % n, key="cat.jpg\x0013\x00999")[1] == 2
        assert (
            spool.put_sequenced("t", lambda n: b"%d" % n, key="cat.jpg\x0012\x00999", name="errors")[1] == 1
        )
        assert spool.put_sequenced("t", lambda n: b"%d" % n)[1] == 3  # no key: always a new number
        odd = b"caf\xe9.jpg".decode("utf-8", "surrogateescape")  # a Latin-1 file name, as os.scandir gives it
        assert spool.put_sequenced("t", lambda n: b"%d" % n, key=odd)[1] == 4
        assert spool.put_sequenced("t", lambda n: b"%d" % n, key=odd) == (0, 4)
        assert spool.depth() == 4
    # Only the newest keys are kept (the table must not grow for ever).
    monkeypatch.setattr("edge.transport.spool._KEYS_KEPT", 100)
    with Spool(path) as spool:
        for i in range(1000):
            spool.put_sequenced("t", lambda n: b"%d" % n, key=f"f{i}")
        kept = spool._db.execute("SELECT COUNT(*) FROM input_seqs").fetchone()[0]  # noqa: SLF001
        assert kept < 200
        assert spool.put_sequenced("t", lambda n: b"%d" % n, key="f999")[0] == 0  # recent: remembered
        assert spool.put_sequenced("t", lambda n: b"%d" % n, key="f0")[0] > 0  # long gone: a new input
