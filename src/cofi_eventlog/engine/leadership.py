"""The host's shared writer: of the processes on one host that log to the same target, one writes for all.

Each process appends to its own journal as ever. The one that holds the writer lock of the spool folder
(``writer-<key>.lock``, an ``flock``) writes every journal of that folder whose header names the same
key, through one connection, in statements that mix the processes' events. Every other process has a
thread blocked in ``flock`` on the same file: when the writer's process dies the kernel frees the lock
and hands it to one of them at once, whose writer takes over: it reads each journal from its committed
offset, so what the dead writer had sent and not committed
is sent again and lands once (the eventId). No daemon: a single process holds the lock itself and
writes as it always did.

The key names where rows go (the DSN without credentials, and the table), so that two processes whose
DSNs reach different servers never write for each other, even when they share a spool folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from .spool import open_own_file

POLL = 0.05  # seconds between the writer's looks at the other processes' journals


def writer_key(target: str) -> str:
    """32 hex digits naming a shared writer: where its rows go, never who logs in."""
    return hashlib.sha256(target.encode()).hexdigest()[:32]


class Leadership:
    """This process's claim on a spool folder's writer lock."""

    def __init__(self, folder: Path, key: str) -> None:
        self.key = key
        self.path = folder / f"writer-{key[:16]}.lock"
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._in_line: int | None = None  # the descriptor a thread waits on for the lock
        self._given_up = False

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
        return self._taken(fd)

    def _taken(self, fd: int) -> bool:
        with self._lock:
            if self._given_up:  # closed meanwhile: pass it on
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd
            return True

    def wait_in_line(self, taken: Callable[[], None]) -> None:
        """Have a thread wait for the lock (blocked in the kernel, costing nothing), and call ``taken``
        once it is ours. Once per process and logger."""
        with self._lock:
            if self._in_line is not None or self._fd is not None or self._given_up:
                return
            try:
                self._in_line = open_own_file(self.path, os.O_RDWR | os.O_CREAT)
            except OSError:
                return
        threading.Thread(target=self._wait, args=(self._in_line, taken), name="cofi-eventlog-writer-lock",
                         daemon=True).start()

    def _wait(self, fd: int, taken: Callable[[], None]) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            return
        with self._lock:
            if self._in_line != fd:  # forgotten (a fork) or given up: the descriptor is not ours to use
                return
            self._in_line = None
        if self._taken(fd):
            taken()

    def release(self) -> None:
        """Let another process take over (closing our only descriptor frees the lock), and stop waiting."""
        with self._lock:
            self._given_up = True
            for fd in (self._fd, self._in_line):
                if fd is not None:
                    os.close(fd)
            self._fd = self._in_line = None

    def forget(self) -> None:
        """In a forked child: close the inherited descriptors; the lock stays the parent's (an ``flock``
        belongs to the open file, which the parent still has open)."""
        self._lock = threading.Lock()  # a parent's thread may have held it at the fork
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
