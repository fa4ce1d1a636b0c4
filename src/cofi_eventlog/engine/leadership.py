"""The host's shared writer: of the processes on one host that log to the same target, one writes for all.

Each process appends to its own journal as ever. The one that holds the writer lock of the spool folder
(``writer-<key>.lock``, an ``flock``) writes every journal of that folder whose header names the same
key, through one connection, in statements that mix the processes' events. When it dies the kernel
frees the lock, and another process's writer, which tries for it every ``POLL`` seconds, takes over:
it reads each journal from its committed offset, so what the dead writer had sent and not committed
is sent again and lands once (the eventId). No daemon: a single process holds the lock itself and
writes as it always did.

The key names where rows go (the DSN without credentials, and the table), so that two processes whose
DSNs reach different servers never write for each other, even when they share a spool folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from .spool import open_own_file

POLL = 0.05  # seconds between a waiting process's tries for the lock, and the writer's looks for new journals


def writer_key(target: str) -> str:
    """32 hex digits naming a shared writer: where its rows go, never who logs in."""
    return hashlib.sha256(target.encode()).hexdigest()[:32]


class Leadership:
    """This process's claim on a spool folder's writer lock."""

    def __init__(self, folder: Path, key: str) -> None:
        self.key = key
        self.path = folder / f"writer-{key[:16]}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_take(self) -> bool:
        """True if this process holds the lock (now or already). Notes our pid in the file, for people."""
        if self._fd is not None:
            return True
        try:
            fd = open_own_file(self.path, os.O_RDWR | os.O_CREAT)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        """Let another process take over (closing our only descriptor frees the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def forget(self) -> None:
        """In a forked child: close the inherited descriptor; the lock stays the parent's (an ``flock``
        belongs to the open file, which the parent still has open)."""
        self.release()


def holder(folder: Path) -> dict[str, int]:
    """The pid noted in each writer lock of the folder that a live process holds (for ``spool status``)."""
    holders: dict[str, int] = {}
    for path in sorted(folder.glob("writer-*.lock")):
        try:
            fd = open_own_file(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:  # held: someone writes
                text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                holders[path.name] = int(text) if text.isdigit() else 0
        finally:
            os.close(fd)
    return holders
