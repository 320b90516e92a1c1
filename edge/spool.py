"""The on-disk spool: every outgoing QoS 1 message is written here before it is published.

SQLite in WAL mode with ``synchronous=NORMAL``: a committed row survives the process being
SIGKILLed (the WAL is in the OS page cache), and a commit costs no fsync, which keeps thousands of
messages per second possible on an SD card. After a *power cut* the last few hundred milliseconds
of commits can be lost; that is the price of not wearing out the card.

Bounded by bytes and by age: the oldest messages are dropped first and every drop is counted in a
persisted counter, so metrics can say how much was lost and why.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused, so order is id order
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    historical INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""



class SpoolError(EdgeError):
    """The spool file cannot be used, or a message cannot fit in it."""


@dataclass(frozen=True)
class SpooledMessage:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float
    attempts: int
    #: True when the message was spooled while the broker was unreachable.
    historical: bool = False


class Spool:
    """A durable FIFO of outgoing messages; thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | Path, *, max_bytes: int = 50_000_000, max_age_s: float = 7 * 86400) -> None:
        if max_bytes <= 0 or max_age_s <= 0:
            raise SpoolError(f"spool limits must be positive, got max_bytes={max_bytes}, max_age_s={max_age_s}",
                             "set spool max_bytes and max_age_s to positive values")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                       timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM messages").fetchone()
        except (sqlite3.Error, OSError) as err:
            raise SpoolError(f"cannot open the spool {self.path}: {err}",
                             "check the directory is writable and has free space; if the file is corrupt, "
                             "move it away (its unsent messages are lost) and restart") from err
        self._bytes = int(row[0])
        self._depth = int(row[1])
        self._last_age_check = 0.0
        # Expiry is a scan: do it at most every second (sooner only for tiny ages, i.e. tests).
        self._age_check_interval = min(1.0, self.max_age_s / 4)
        with self._lock:
            self._expire(time.time())

    # ------------------------------------------------------------------ writing
    def put(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, *,
            historical: bool = False) -> int:
        """Append durably and return the message id; drops the oldest messages if over the limits."""
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        return self._insert(topic, lambda: data, qos, retain, historical)[0]

    def put_sequenced(self, topic: str, build: Callable[[int], bytes], *, name: str = "predictions",
                      qos: int = 1, retain: bool = False, historical: bool = False) -> tuple[int, int]:
        """Take ``next_seq(name)`` and append ``build(seq)`` in ONE transaction; returns (id, seq).

        With ``next_seq()`` then ``put()``, a SIGKILL between the two commits leaves a hole in the
        sequence that subscribers would count as a lost message; this cannot.
        """
        holder: list[int] = []

        def payload() -> bytes:
            row = self._db.execute(
                "INSERT INTO counters (name, value) VALUES (?, 1) "
                "ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value", ("seq:" + name,)
            ).fetchall()[0]
            holder.append(int(row[0]))
            return build(holder[0])

        msg_id, _ = self._insert(topic, payload, qos, retain, historical)
        return msg_id, holder[0]

    def _insert(self, topic: str, make: Callable[[], bytes], qos: int, retain: bool,
                historical: bool) -> tuple[int, int]:
        now = time.time()
        with self._lock:
            self._begin()
            try:
                data = make()
                size = len(data) + len(topic.encode())
                if size > self.max_bytes:
                    raise SpoolError(f"message of {size} bytes for {topic!r} is larger than the whole spool "
                                     f"({self.max_bytes} bytes)",
                                     "raise the spool max_bytes or send smaller messages")
                if now - self._last_age_check >= self._age_check_interval:
                    self._expire(now, in_tx=True)
                if self._bytes + size > self.max_bytes:
                    self._drop_oldest(self._bytes + size - self.max_bytes)
                cur = self._db.execute(
                    "INSERT INTO messages (topic, payload, qos, retain, created, historical, size) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (topic, sqlite3.Binary(data), int(qos), int(bool(retain)), now, int(historical), size))
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._bytes += size
            self._depth += 1
            return int(cur.lastrowid or 0), size

    def _drop_oldest(self, need: int) -> None:
        freed = dropped = 0
        last_id: int | None = None
        while freed < need:
            rows = self._db.execute("SELECT id, size FROM messages WHERE id > ? ORDER BY id LIMIT 256",
                                    (last_id or 0,)).fetchall()
            if not rows:
                break
            for msg_id, size in rows:
                if freed >= need:
                    break
                freed += size
                dropped += 1
                last_id = msg_id
        if last_id is not None:
            self._db.execute("DELETE FROM messages WHERE id <= ?", (last_id,))
            self._count_dropped(dropped)
            self._bytes -= freed
            self._depth -= dropped

    def _expire(self, now: float, in_tx: bool = False) -> None:
        self._last_age_check = now
        cutoff = now - self.max_age_s
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE created < ?",
                               (cutoff,)).fetchone()
        if not row[0]:
            return
        if not in_tx:
            self._begin()
        try:
            self._db.execute("DELETE FROM messages WHERE created < ?", (cutoff,))
            self._count_dropped(int(row[0]))
            if not in_tx:
                self._db.execute("COMMIT")
        except BaseException:
            if not in_tx:
                self._rollback()
            raise
        self._bytes -= int(row[1])
        self._depth -= int(row[0])

    def _count_dropped(self, n: int) -> None:
        self._db.execute("INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (n,))

    def mark_attempted(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("UPDATE messages SET attempts = attempts + 1 WHERE id = ?",
                                     [(i,) for i in ids])
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def ack(self, ids: Iterable[int]) -> None:
        """Delete delivered messages (unknown ids, e.g. already dropped, are ignored)."""
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            self._begin()
            try:
                removed = removed_bytes = 0
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    n, b = self._db.execute(
                        f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE id IN ({marks})",
                        chunk).fetchone()
                    self._db.execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk)
                    removed += n
                    removed_bytes += b
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._depth -= removed
            self._bytes -= removed_bytes

    # ------------------------------------------------------------------ reading
    def pending(self, limit: int = 500, after_id: int = 0) -> list[SpooledMessage]:
        """Oldest first; ``after_id`` continues a scan without re-reading messages already in flight."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, created, attempts, historical FROM messages "
                "WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
        return [SpooledMessage(id=r[0], topic=r[1], payload=bytes(r[2]), qos=r[3], retain=bool(r[4]),
                               created=r[5], attempts=r[6], historical=bool(r[7])) for r in rows]

    def last_id(self) -> int:
        """The highest id ever handed out (0 for a new spool)."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        return int(row[0]) if row else 0

    def depth(self) -> int:
        return self._depth

    def size_bytes(self) -> int:
        return self._bytes

    def dropped(self) -> int:
        """Messages dropped for size or age over the spool's whole life (persisted)."""
        return self._counter("dropped")

    def _counter(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def next_seq(self, name: str = "predictions") -> int:
        """Next value of a persisted counter: strictly increasing across restarts and SIGKILL."""
        with self._lock:
            self._begin()
            try:
                row = self._db.execute(
                    "INSERT INTO counters (name, value) VALUES (?, 1) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value", ("seq:" + name,)
                ).fetchall()[0]
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return int(row[0])

    # ------------------------------------------------------------------ plumbing
    def _begin(self) -> None:
        # IMMEDIATE: take the write lock up front so two processes on one file fail fast, not mid-way.
        self._db.execute("BEGIN IMMEDIATE")

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:  # pragma: no cover
                pass

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
