"""The engine lease on a SQLite database: `flock` on `<database>.lock` beside it.

The kernel drops the lock when its file descriptor closes: at `release()` and when the
process dies, kill -9 included. The holder writes its pid, host and start time into the
file, so a second engine can say who holds the lease. The file is never deleted (deleting a
lock file races with the next taker); `check` notices if someone else did.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

import orjson

from engine.store.port import LeaseError


def lock_path(database: Path) -> Path:
    """The lock file of a database file: `<database>.lock`."""
    return database.with_name(database.name + ".lock")


class FileLease:
    """An exclusive `flock` on one lock file, held until `release()` or the process ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._inode = 0

    @property
    def held(self) -> bool:
        """Whether this process holds the lease."""
        return self._fd is not None

    def acquire(self, what: str) -> None:
        """Take the lease of `what` (named in the refusal); LeaseError naming the holder."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            msg = (
                f"another pledgewatch engine holds the lease on {what} ({self.path}): "
                f"{holder}. Two engines on one database store every reading and send every "
                "webhook twice: stop the other engine first, or give this one another database"
            )
            raise LeaseError(msg) from None
        except BaseException:
            os.close(fd)
            raise
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(me) + b"\n", 0)
        self._fd, self._inode = fd, os.fstat(fd).st_ino

    def check(self) -> None:
        """LeaseError if the lock file was deleted or replaced: a new engine could lock the
        new file while this one runs."""
        if self._fd is None:
            return
        try:
            inode = self.path.stat().st_ino
        except FileNotFoundError:
            inode = -1
        if inode != self._inode:
            msg = (
                f"lost the engine lease: its lock file {self.path} was deleted or replaced; "
                "another engine may be running on this database"
            )
            raise LeaseError(msg)

    def release(self) -> None:
        """Give the lease up."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _read_holder(fd: int) -> str:
    """Who wrote the lock file, as a phrase."""
    with contextlib.suppress(OSError, orjson.JSONDecodeError):
        doc = orjson.loads(os.pread(fd, 4096, 0) or b"null")
        if isinstance(doc, dict):
            return f"pid {doc.get('pid')} on host {doc.get('host')}, since {doc.get('since')}"
    return "a process that has not written its name yet"
