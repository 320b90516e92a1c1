"""A directory: the files it holds, then new ones as they arrive; nothing re-processed after a restart.

The record of processed files is a small SQLite table in the state directory,
written only after the file's prediction (or error) is in the spool, so a
crash between the two re-processes one file rather than losing it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from edge.agent.sources.base import Item

log = logging.getLogger("edge.agent.source")

# Files still being written by common tools; they are renamed when complete.
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")


class ProcessedRecord:
    def __init__(self, db_path: Path, directory: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.key = str(directory.resolve())
        self.db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS processed (dir TEXT, name TEXT, size INTEGER, mtime_ns INTEGER,"
            " at REAL, PRIMARY KEY (dir, name))"
        )
        self._lock = threading.Lock()
        with self._lock:
            rows = self.db.execute(
                "SELECT name, size, mtime_ns FROM processed WHERE dir=?", (self.key,)
            ).fetchall()
        self.seen: dict[str, tuple[int, int]] = {n: (s, m) for n, s, m in rows}

    def is_done(self, name: str, st: os.stat_result) -> bool:
        # A file replaced under the same name (new size or mtime) is a new input.
        return self.seen.get(name) == (st.st_size, st.st_mtime_ns)

    def mark(self, name: str, size: int, mtime_ns: int) -> None:
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO processed VALUES (?,?,?,?,?)",
                (self.key, name, size, mtime_ns, time.time()),
            )
            self.seen[name] = (size, mtime_ns)

    def forget_missing(self, present: set[str]) -> int:
        """Drop the records of files no longer in the directory; returns how many.

        A camera writing one frame a second that a cleaner deletes would otherwise grow this record
        (memory and database) by ~86,000 entries a day for ever.
        """
        with self._lock:
            gone = [n for n in self.seen if n not in present]
            if gone:
                self.db.executemany(
                    "DELETE FROM processed WHERE dir=? AND name=?", [(self.key, n) for n in gone]
                )
                for n in gone:
                    del self.seen[n]
        return len(gone)

    def close(self) -> None:
        with self._lock:
            self.db.close()


class DirectorySource:
    def __init__(
        self, directory: Path, state_dir: Path, poll_interval_s: float = 0.5, settle_s: float = 0.2
    ) -> None:
        self.directory = directory
        self.poll_interval_s = poll_interval_s
        self.settle_s = settle_s
        self.description = f"directory:{directory}"
        self.record = ProcessedRecord(state_dir / "sources.db", directory)
        self._pending: set[str] = set()

    def _scan(self, settle: bool) -> list[tuple[str, os.stat_result]]:
        found = []
        now = time.time()
        try:
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            log.error("cannot list %s: %s", self.directory, exc)
            return []
        # Names being processed count as present: their record is written when they are done.
        self.record.forget_missing({e.name for e in entries} | self._pending)
        for e in entries:
            name = e.name
            if name.startswith(".") or name.endswith(PARTIAL_SUFFIXES) or name in self._pending:
                continue
            try:
                if not e.is_file():
                    continue
                st = e.stat()
            except OSError:
                continue
            if self.record.is_done(name, st):
                continue
            if settle and now - st.st_mtime < self.settle_s:
                continue  # maybe still being written; next scan
            found.append((name, st))
        found.sort(key=lambda x: (x[1].st_mtime_ns, x[0]))
        return found

    def items(self, stop: threading.Event, once: bool) -> Iterator[Item]:
        first = True
        while not stop.is_set():
            # Files present at start are complete (unless a writer is still busy: settle anyway).
            batch = self._scan(settle=not (once and first))
            first = False
            for name, st in batch:
                if stop.is_set():
                    return
                self._pending.add(name)
                yield Item(name, self.directory / name, meta={"size": st.st_size, "mtime_ns": st.st_mtime_ns})
            if once:
                return
            stop.wait(self.poll_interval_s)

    def done(self, item: Item) -> None:
        self.record.mark(item.name, item.meta["size"], item.meta["mtime_ns"])
        self._pending.discard(item.name)

    def close(self) -> None:
        self.record.close()
