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

from edge.agent.sources.base import Item, escaped_name
from edge.agent.sources.inotify import DirectoryWatch
from edge.errors import EdgeError, InputError

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


# A full scan stats every file (8 % of a core at 10,000 files, polled twice a second): the directory is
# listed again only when something may have changed. With inotify (Linux) that is when an event arrived.
# Without it, when the directory's mtime moved (a name added, removed or renamed), and also while the
# mtime is this recent (a change within the filesystem's timestamp tick after a scan would not move it).
# Either way, while files wait to settle.
RACY_S = 1.0
# A safety net for both (a file rewritten in place does not move the directory's mtime): a full scan at
# this interval.
FULL_RESCAN_S = 60.0


class DirectorySource:
    def __init__(
        self, directory: Path, state_dir: Path, poll_interval_s: float = 0.5, settle_s: float = 0.2
    ) -> None:
        self.directory = directory
        self.poll_interval_s = poll_interval_s
        self.settle_s = settle_s
        self.description = f"directory:{directory}"
        self.record = ProcessedRecord(state_dir / "sources.db", directory)
        self.root = directory.resolve()
        self._pending: set[str] = set()
        self._scanned_mtime_ns: int | None = None  # the directory's mtime at the last scan
        self._scanned_at = 0.0
        self._unsettled = False  # the last scan left files to settle: scan again
        self._watch = DirectoryWatch.open(directory)

    def _changed(self) -> bool:
        """Whether a scan may find something new (one read of inotify, else one stat of the directory)."""
        if self._unsettled or time.monotonic() - self._scanned_at >= FULL_RESCAN_S:
            return True
        if self._watch is not None:
            return self._watch.changed()
        try:
            mtime_ns = os.stat(self.directory).st_mtime_ns
        except OSError:
            return True  # _scan logs why
        now = time.time()
        return mtime_ns != self._scanned_mtime_ns or now - mtime_ns / 1e9 < RACY_S

    def _scan(self, settle: bool) -> list[tuple[str, str, os.stat_result, EdgeError | None]]:
        """New files as (record key, name on disk, stat, refusal), oldest first."""
        found = []
        now = time.time()
        if self._watch is not None:
            self._watch.changed()  # events up to now are covered by this scan
        try:
            self._scanned_mtime_ns = os.stat(self.directory).st_mtime_ns  # before listing: no change lost
            self._scanned_at = time.monotonic()
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            log.error("cannot list %s: %s", self.directory, exc)
            return []
        self._unsettled = False
        keys = {e.name: escaped_name(e.name) for e in entries}
        # Names being processed count as present: their record is written when they are done.
        self.record.forget_missing(set(keys.values()) | self._pending)
        for e in entries:
            name, key = e.name, keys[e.name]
            if name.startswith(".") or name.endswith(PARTIAL_SUFFIXES) or key in self._pending:
                continue
            refusal: EdgeError | None = None
            try:
                if not e.is_file():
                    continue
                refusal = self._outside(name) if e.is_symlink() else None
                # a link out is recorded by its own stat (never the target's): a new link is a new input
                st = e.stat(follow_symlinks=refusal is None)
            except OSError:
                continue
            if self.record.is_done(key, st):
                continue
            if key != name:
                refusal = InputError(
                    f"file name '{key}' is not valid UTF-8 (its other bytes shown as \\xNN): not processed",
                    "rename the file to a UTF-8 name (e.g. with convmv); it is then processed",
                )
            if settle and refusal is None and now - st.st_mtime < self.settle_s:
                self._unsettled = True
                continue  # maybe still being written; next scan
            found.append((key, name, st, refusal))
        found.sort(key=lambda x: (x[2].st_mtime_ns, x[0]))
        return found

    def _outside(self, name: str) -> EdgeError | None:
        """A refusal when the symlink ``name`` leads out of the watched directory (its target is not read)."""
        target = Path(os.path.realpath(self.directory / name))
        if target.is_relative_to(self.root):
            return None
        return InputError(
            f"'{escaped_name(name)}' is a symbolic link to a file outside {self.directory}: not followed",
            "copy the file into the directory instead of linking to it",
        )

    def items(self, stop: threading.Event, once: bool) -> Iterator[Item]:
        first = True
        while not stop.is_set():
            # Files present at start are complete (unless a writer is still busy: settle anyway).
            batch = self._scan(settle=not (once and first)) if first or self._changed() else []
            first = False
            for key, name, st, refusal in batch:
                if stop.is_set():
                    return
                self._pending.add(key)
                meta = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
                yield Item(key, refusal or self._read(name), meta=meta)
            if once:
                return
            stop.wait(self.poll_interval_s)

    def _read(self, name: str) -> bytes | EdgeError:
        """The file's bytes, never through a symlink swapped in after the scan (O_NOFOLLOW)."""
        path = self.directory / name
        try:
            if os.path.islink(path):
                refusal = self._outside(name)
                if refusal is not None:
                    return refusal
                path = Path(os.path.realpath(path))
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as fh:
                return fh.read()
        except OSError as exc:
            return InputError(
                f"cannot read '{escaped_name(name)}': {exc.strerror}", "check the file is readable"
            )

    def done(self, item: Item) -> None:
        self.record.mark(item.name, item.meta["size"], item.meta["mtime_ns"])
        self._pending.discard(item.name)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        self.record.close()
