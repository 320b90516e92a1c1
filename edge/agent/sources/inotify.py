"""Linux inotify on one directory, through ctypes to libc (no dependency): has anything changed since?

The directory source asks once per poll; with nothing new the answer costs one non-blocking read()
whatever the number of files. Where inotify is missing (macOS, a libc without it, a filesystem that
refuses watches, the per-user watch limit reached) ``DirectoryWatch.open`` returns None and the
source falls back to comparing the directory's mtime.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("edge.agent.source")

# <sys/inotify.h>: a name created, moved in or out, deleted, closed after writing, or its metadata
# changed (touch); the directory itself deleted or moved. IN_Q_OVERFLOW and IN_IGNORED come anyway.
IN_ATTRIB, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x4, 0x8, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
MASK = (
    IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)


class DirectoryWatch:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, directory: Path) -> DirectoryWatch | None:
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            init1, add_watch = libc.inotify_init1, libc.inotify_add_watch
        except (OSError, AttributeError):
            return None
        add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        fd = init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            log.info(
                "inotify unavailable (%s): polling %s by its mtime",
                os.strerror(ctypes.get_errno()),
                directory,
            )
            return None
        if add_watch(fd, os.fsencode(directory), MASK) < 0:
            log.info(
                "cannot watch %s with inotify (%s): polling it by its mtime",
                directory,
                os.strerror(ctypes.get_errno()),
            )
            os.close(fd)
            return None
        return cls(fd)

    def changed(self) -> bool:
        """Whether any event arrived since the last call (drains them; never blocks)."""
        seen = False
        while True:
            try:
                if not os.read(self.fd, 65536):
                    return seen
                seen = True
            except BlockingIOError:
                return seen
            except OSError as exc:  # not expected; a scan is the safe answer
                if exc.errno != errno.EINTR:
                    return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
