"""The on-disk spool: every outgoing QoS 1 message is written here before it is published.

SQLite in WAL mode with ``synchronous=NORMAL``: a committed row survives the process being
SIGKILLed (the WAL is in the OS page cache), and a commit costs no fsync, which keeps thousands of
messages per second possible on an SD card. After a *power cut* the last few hundred milliseconds
of commits can be lost; that is the price of not wearing out the card.

Bounded by bytes and by age: the oldest messages are dropped first and every drop is counted in a
persisted counter, so metrics can say how much was lost and why.

A full disk: a write that fails is rolled back whole (its seq included, so no number is ever burnt or
given twice) and raises :class:`SpoolError`; the next write simply tries again, so the spool works
again as soon as space returns, without a restart. Deleting acknowledged rows also needs a little
space (SQLite appends the change to its WAL): a small reserve file beside the spool is given up for
that, so acknowledged messages can always be deleted; new messages are refused until it could be
made again, i.e. until space has returned.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# One Spool per file per process; another process opening the same file would publish every message
# twice and race on deletes, so an advisory lock (released by the kernel even on SIGKILL) stops it.
_LOCKS: dict[str, tuple[int, int]] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_path(path: Path) -> None:
    key = str(path.resolve())
    with _LOCKS_GUARD:
        if key in _LOCKS:
            fd, count = _LOCKS[key]
            _LOCKS[key] = (fd, count + 1)
            return
        if fcntl is None:  # pragma: no cover - not a Linux device
            _LOCKS[key] = (-1, 1)
            return
        fd = os.open(key + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SpoolError(
                f"the spool {path} is in use by another process (pid {holder})",
                "run one agent per spool file, or give each agent its own spool path",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        _LOCKS[key] = (fd, 1)


def _unlock_path(path: Path) -> None:
    key = str(path.resolve())
    with _LOCKS_GUARD:
        if key not in _LOCKS:
            return
        fd, count = _LOCKS.pop(key)
        if count > 1:
            _LOCKS[key] = (fd, count - 1)
        elif fd >= 0:
            os.close(fd)


def _is_sqlite_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _salvage_counters(path: Path) -> list[tuple[str, int]] | None:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [(str(n), int(v)) for n, v in db.execute("SELECT name, value FROM counters")]
        finally:
            db.close()
    except sqlite3.Error:
        return None


def _dump_properties(props: dict[str, Any]) -> str:
    def enc(v: Any) -> Any:
        if isinstance(v, (bytes, bytearray)):
            return {"b64": base64.b64encode(bytes(v)).decode()}
        if isinstance(v, (list, tuple)):
            return [enc(x) for x in v]
        return v

    return json.dumps({k: enc(v) for k, v in props.items()})


def _load_properties(text: str) -> dict[str, Any]:
    def dec(v: Any) -> Any:
        if isinstance(v, dict) and set(v) == {"b64"}:
            return base64.b64decode(v["b64"])
        if isinstance(v, list):
            return [dec(x) for x in v]
        return v

    out = {k: dec(v) for k, v in json.loads(text).items()}
    if "UserProperty" in out:  # paho wants (name, value) tuples
        out["UserProperty"] = [tuple(p) for p in out["UserProperty"]]
    return out


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
    properties TEXT,  -- MQTT 5 publish properties as JSON (bytes base64-encoded), NULL when none
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- The seq given to each recent input (put_sequenced key=): an input handled again after a crash or a
-- failed "done" record gets its first number back instead of a second one. The newest rows are kept.
CREATE TABLE IF NOT EXISTS input_seqs (key BLOB PRIMARY KEY, seq INTEGER NOT NULL);
"""
_KEYS_KEPT = 10_000  # inputs remembered by put_sequenced(key=): far more than can be in flight


_RESERVE_BYTES = 256 * 1024  # given up on a full disk so that deletes (acks) can still commit
_RESERVE_RETRY_S = 1.0  # how often to try making the reserve again while the disk is full


def _disk_full(err: BaseException) -> bool:
    code = getattr(err, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return int(code) & 0xFF == sqlite3.SQLITE_FULL
    return "disk is full" in str(err)


class SpoolError(EdgeError):
    """The spool file cannot be used, or a message cannot fit in it."""


class SpoolFullError(SpoolError):
    """The disk under the spool is full: the same write works again once space returns."""


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
    #: MQTT 5 publish properties by paho name (e.g. ``CorrelationData``), None when none.
    properties: dict[str, Any] | None = None


class Spool:
    """A durable FIFO of outgoing messages; thread-safe (one connection behind a lock)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 50_000_000,
        max_age_s: float = 7 * 86400,
        synchronous: str = "NORMAL",
    ) -> None:
        """``synchronous="FULL"`` fsyncs every message: survives power cuts too, at a few ms per
        message on an SD card (and wears it); the default survives any process crash."""
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise SpoolError(
                f"spool synchronous must be NORMAL or FULL, got {synchronous!r}",
                "use NORMAL (survives crashes) or FULL (also survives power cuts, slower)",
            )
        self.synchronous = synchronous.upper()
        if max_bytes <= 0 or max_age_s <= 0:
            raise SpoolError(
                f"spool limits must be positive, got max_bytes={max_bytes}, max_age_s={max_age_s}",
                "set spool max_bytes and max_age_s to positive values",
            )
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self._lock = threading.Lock()
        self._closed = False
        self._seq_floor = 0
        #: Where a corrupt spool was moved to when this one was opened (None normally).
        self.quarantined: Path | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SpoolError(
                f"cannot create the spool directory {self.path.parent}: {err}", "choose a writable spool path"
            ) from err
        self._reserve = self.path.with_name(self.path.name + ".reserve")
        self._reserve_tried = 0.0  # monotonic time of the last failed or given-up reserve, 0: it exists
        self._reserve_lock = threading.Lock()
        _lock_path(self.path)
        try:
            try:
                try:
                    row = self._open()
                except sqlite3.OperationalError:
                    # A full disk may leave no room for SQLite's -shm/-wal files: the reserve is for
                    # that too, so an agent can start and send (then delete) what it had spooled.
                    if not self._release_reserve():
                        raise
                    row = self._open()
            except sqlite3.OperationalError as err:
                # Not damage (a full disk, an I/O error, no permission): quarantining would put the
                # unsent messages aside for nothing. Say why; a restart once it is fixed replays them.
                full = " (disk full)" if _disk_full(err) else ""
                raise SpoolError(
                    f"cannot open the spool {self.path}{full}: {err}",
                    "free disk space / fix the file's permissions, then start again; the spool was left untouched",
                ) from err
            except sqlite3.DatabaseError as err:
                if not _is_sqlite_file(self.path):
                    raise SpoolError(
                        f"{self.path} is not a spool (not an SQLite database): {err}",
                        "point the spool at a new file; this one was left untouched",
                    ) from err
                row = self._quarantine(err)
        except BaseException:
            _unlock_path(self.path)
            raise
        self._bytes = int(row[0])
        self._depth = int(row[1])
        self._newest_id = self.last_id()
        self._ensure_reserve()
        self._last_age_check = 0.0
        # Expiry is a scan: do it at most every second (sooner only for tiny ages, i.e. tests).
        self._age_check_interval = min(1.0, self.max_age_s / 4)
        with self._lock:
            self._expire(time.time())

    def _open(self) -> tuple[int, int]:
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={self.synchronous}")
            ok = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {ok}")
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(messages)")}
            if "properties" not in columns:  # spool written by an older version
                self._db.execute("ALTER TABLE messages ADD COLUMN properties TEXT")
            self._db.execute(
                "SELECT id, topic, payload, qos, retain, created, attempts, historical, size, "
                "properties "
                "FROM messages LIMIT 0"
            ).fetchall()
            return self._db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM messages").fetchone()
        except BaseException:
            self._db.close()
            raise

    def _quarantine(self, err: Exception) -> tuple[int, int]:
        # A corrupt spool (SD card after a power cut) must not keep a headless device from working:
        # keep the file for forensics, start a new one, and make sure seq still only goes up.
        counters = _salvage_counters(self.path)
        target = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(target) + suffix))
        self.quarantined = target
        row = self._open()
        if counters is not None:
            self._db.executemany("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", counters)
        else:
            # Counters unreadable: continue numbering from the clock (ms), far above any old seq.
            self._seq_floor = int(time.time() * 1000)
            self._db.execute(
                "INSERT OR REPLACE INTO counters (name, value) VALUES ('seq_floor', ?)", (self._seq_floor,)
            )
        logging.getLogger("edge.transport.spool").error(
            "spool %s was corrupt (%s); moved to %s and started a new one (its unsent messages are lost)",
            self.path,
            err,
            target,
        )
        return row

    # ------------------------------------------------------------------ writing
    def put(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        *,
        historical: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> int:
        """Append durably and return the message id; drops the oldest messages if over the limits."""
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        return self._insert(topic, lambda: data, qos, retain, historical, properties)[0]

    def put_sequenced(
        self,
        topic: str,
        build: Callable[[int], bytes],
        *,
        name: str = "predictions",
        qos: int = 1,
        retain: bool = False,
        historical: bool = False,
        properties: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> tuple[int, int]:
        """Take ``next_seq(name)`` and append ``build(seq)`` in ONE transaction; returns (id, seq).

        With ``next_seq()`` then ``put()``, a SIGKILL between the two commits leaves a hole in the
        sequence that subscribers would count as a lost message; this cannot.

        ``key`` names the input the message is about (e.g. a file's name, size and mtime). When a
        message with that key was spooled before (the input is being handled again: a crash or a full
        disk came between spooling and recording it as done), nothing is stored and ``(0, its seq)`` is
        returned: one input never gets two numbers.
        """
        holder: list[int] = []
        # Bytes, so that any str works (file names that are not UTF-8 come as surrogate escapes).
        ref = None if key is None else f"{name}\0{key}".encode("utf-8", "surrogateescape")

        def payload() -> bytes | None:
            if ref is not None:
                row = self._db.execute("SELECT seq FROM input_seqs WHERE key = ?", (ref,)).fetchone()
                if row is not None:
                    holder.append(int(row[0]))
                    return None
            seq = self._increment("seq:" + name)
            holder.append(seq)
            if ref is not None:
                cur = self._db.execute("INSERT INTO input_seqs (key, seq) VALUES (?, ?)", (ref, seq))
                row_id = cur.lastrowid or 0
                if row_id % 1000 == 0:
                    self._db.execute("DELETE FROM input_seqs WHERE rowid <= ?", (row_id - _KEYS_KEPT,))
            return build(seq)

        msg_id, _ = self._insert(topic, payload, qos, retain, historical, properties)
        return msg_id, holder[0]

    def _insert(
        self,
        topic: str,
        make: Callable[[], bytes | None],
        qos: int,
        retain: bool,
        historical: bool,
        properties: dict[str, Any] | None = None,
    ) -> tuple[int, int]:
        props = _dump_properties(properties) if properties else None
        if self._reserve_tried:
            # The reserve was given up (or never made): new messages wait until it is back, so the
            # space left stays for deleting acknowledged ones.
            self._ensure_reserve()
            if self._reserve_tried:
                raise SpoolFullError(
                    f"cannot write to the spool {self.path} (disk full): less than "
                    f"{_RESERVE_BYTES // 1024} KB free beside it",
                    "free disk space or lower the spool max_bytes; the message was not stored (the next "
                    "write tries again)",
                )
        now = time.time()
        with self._lock:
            self._begin()
            try:
                data = make()
                if data is None:  # nothing to store (put_sequenced: the input was spooled before)
                    self._db.execute("ROLLBACK")
                    return 0, 0
                size = len(data) + len(topic.encode()) + (len(props) if props else 0)
                if size > self.max_bytes:
                    raise SpoolError(
                        f"message of {size} bytes for {topic!r} is larger than the whole spool "
                        f"({self.max_bytes} bytes)",
                        "raise the spool max_bytes or send smaller messages",
                    )
                if now - self._last_age_check >= self._age_check_interval:
                    self._expire(now, in_tx=True)
                if self._bytes + size > self.max_bytes:
                    self._drop_oldest(self._bytes + size - self.max_bytes)
                cur = self._db.execute(
                    "INSERT INTO messages (topic, payload, qos, retain, created, historical, size, properties) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        topic,
                        sqlite3.Binary(data),
                        int(qos),
                        int(bool(retain)),
                        now,
                        int(historical),
                        size,
                        props,
                    ),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                full = _disk_full(err)
                raise (SpoolFullError if full else SpoolError)(
                    f"cannot write to the spool {self.path}{' (disk full)' if full else ''}: {err}",
                    "free disk space or lower the spool max_bytes; the message was not stored (the next "
                    "write tries again)",
                ) from err
            except BaseException:
                self._rollback()
                raise
            self._bytes += size
            self._depth += 1
            msg_id = int(cur.lastrowid or 0)
            self._newest_id = max(self._newest_id, msg_id)
        return msg_id, size

    def _drop_oldest(self, need: int) -> None:
        freed = dropped = 0
        last_id: int | None = None
        while freed < need:
            rows = self._db.execute(
                "SELECT id, size FROM messages WHERE id > ? ORDER BY id LIMIT 256", (last_id or 0,)
            ).fetchall()
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
        # Cheap common case: the oldest row (by id) is young enough, so nothing is expired. (After
        # a clock jump backwards a younger-id row may be "older"; it goes once the head expires.)
        oldest = self._db.execute("SELECT created FROM messages ORDER BY id LIMIT 1").fetchone()
        if oldest is None or oldest[0] >= cutoff:
            return
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE created < ?", (cutoff,)
        ).fetchone()
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
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (n,),
        )

    def mark_attempted(self, ids: Iterable[int]) -> None:
        """Count a re-send (diagnostics only: skipped on a full disk rather than holding up the replay)."""
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "UPDATE messages SET attempts = attempts + 1 WHERE id = ?", [(i,) for i in ids]
                )
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as err:
                self._rollback()
                if not _disk_full(err):
                    raise
            except BaseException:
                self._rollback()
                raise

    def ack(self, ids: Iterable[int]) -> None:
        """Delete delivered messages (unknown ids, e.g. already dropped, are ignored).

        On a full disk the reserve file is given up first, so this succeeds where an insert cannot.
        """
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            try:
                self._delete(ids)
            except sqlite3.OperationalError as err:
                if not _disk_full(err) or not self._release_reserve():
                    raise
                logging.getLogger("edge.transport.spool").warning(
                    "disk full under the spool %s: gave up its %d KB reserve to delete acknowledged "
                    "messages; free some space",
                    self.path,
                    _RESERVE_BYTES // 1024,
                )
                self._delete(ids)
                self._checkpoint()
        if self._reserve_tried:
            self._ensure_reserve()

    def _delete(self, ids: list[int]) -> None:
        self._begin()
        try:
            removed = removed_bytes = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                n, b = self._db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE id IN ({marks})", chunk
                ).fetchone()
                self._db.execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk)
                removed += n
                removed_bytes += b
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._depth -= removed
        self._bytes -= removed_bytes

    def _checkpoint(self) -> None:
        # Move the WAL into the database and truncate it: what the deletes freed becomes reusable.
        # Needs room to copy pages; on a still-full disk it fails and is retried by SQLite later.
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass

    def _release_reserve(self) -> bool:
        try:
            self._reserve.unlink()
        except FileNotFoundError:
            return False
        except OSError:
            return False
        self._reserve_tried = time.monotonic()
        return True

    def _ensure_reserve(self) -> None:
        """Make the reserve file if it is missing (at most every few seconds; never raises)."""
        if not self._reserve_lock.acquire(blocking=False):
            return  # another thread is at it
        try:
            now = time.monotonic()
            if self._reserve_tried and now - self._reserve_tried < _RESERVE_RETRY_S:
                return
            if self._reserve.exists():
                self._reserve_tried = 0.0
                return
            tmp = self._reserve.with_name(self._reserve.name + ".tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(b"\0" * _RESERVE_BYTES)  # real blocks (a sparse file would reserve nothing)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self._reserve)
                self._reserve_tried = 0.0
            except OSError:  # the disk is still full: try again later
                self._reserve_tried = now
                try:
                    tmp.unlink()
                except OSError:
                    pass
        finally:
            self._reserve_lock.release()

    # ------------------------------------------------------------------ reading
    def pending(self, limit: int = 500, after_id: int = 0) -> list[SpooledMessage]:
        """Oldest first; ``after_id`` continues a scan without re-reading messages already in flight."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, created, attempts, historical, properties FROM messages "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [
            SpooledMessage(
                id=r[0],
                topic=r[1],
                payload=bytes(r[2]),
                qos=r[3],
                retain=bool(r[4]),
                created=r[5],
                attempts=r[6],
                historical=bool(r[7]),
                properties=_load_properties(r[8]) if r[8] else None,
            )
            for r in rows
        ]

    def last_id(self) -> int:
        """The highest id ever handed out (0 for a new spool)."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        return int(row[0]) if row else 0

    def newest_id(self) -> int:
        """The id of the newest message this process stored (or found at start): last_id() without a query."""
        return self._newest_id

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
                value = self._increment("seq:" + name)
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return value

    def _increment(self, key: str) -> int:
        # Inside a transaction. No RETURNING: Raspberry Pi OS bullseye ships SQLite 3.34.
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + 1",
            (key, self._first_seq()),
        )
        return int(self._db.execute("SELECT value FROM counters WHERE name = ?", (key,)).fetchone()[0])

    def _first_seq(self) -> int:
        if not self._seq_floor:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'seq_floor'").fetchone()
            self._seq_floor = int(row[0]) if row else -1
        return max(self._seq_floor, 0) + 1

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
            if self._closed:
                return
            self._closed = True
            try:
                self._db.close()
            except sqlite3.Error:  # pragma: no cover
                pass
            _unlock_path(self.path)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
