"""A journal: one process's events, in a memory-mapped file of the spool folder.

A call returns once its event is copied into the map. The copy lands in the kernel's page cache, which
outlives the process however it dies — SIGKILL, ``os._exit``, the OOM killer, a container's PID 1 going
away — so the event is safe from then on (a power loss is what ``durability='spool'``'s fsync is for).
The writer reads events from the journal and moves the header's ``committed`` offset past those the
database has. A journal is ``flock``-ed by the process that appends to it; when the lock is free, its
process is gone (or has sealed it), and any logger of the same target may adopt it: write what lies
past ``committed``, then delete it. The client-made eventId makes a row written twice land once.

With the host's shared writer (see leadership.py) the process that holds the folder's writer lock
writes the journals of the other live processes too: their header names the writer they wait for,
and their end is found as an adopter finds it. A process that waits asks for a flush by counting one
more request in its header; the writer then writes everything, and adopts what orphans there are.

Layout: a header page (magic, the eventId node, committed, sealed, the shared writer's key, the cluster,
a flush request), then records from ``DATA`` on, each one line of JSON: a call as its argument list, or
``{"row": [...]}`` for a row built on the caller's thread. JSON never holds a NUL byte, so the first NUL
after the records is the end, and a record cut short by a death mid-copy lacks its newline and is
ignored.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
from pathlib import Path

MAGIC = b"CEVJNL01"
HEADER = struct.Struct("<8sQQQ")  # magic, node, committed, sealed
COMMITTED_AT = 16
SEALED_AT = 24
WRITER_AT = 32  # 32 hex digits naming the shared writer that writes it while its process lives; NULs: itself
CLUSTER_AT = 64  # 32 hex digits naming the cluster the journal was first written to; NULs until then
FLUSH_AT = 96  # its process's flush requests, counted: the shared writer writes everything when it changes
DATA = 4096
SUFFIX = ".jnl"
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux 5.14; the constant is Python 3.12's
TYPICAL_RECORD = 512  # bytes: what a take copies per record it may hold
AHEAD = 1 << 20  # bytes made ready past the end, so that a call never waits for the disk to find a block


class JournalFull(Exception):
    """The record does not fit in what is left of this journal."""


class Journal:
    """One journal file, mapped. Callers append with ``map.write``: one C call that, under the GIL, takes
    the next bytes of the map and copies the record there, so concurrent callers need no lock and never
    interleave. The writer thread reads and commits. ``path`` is None for the in-memory fallback (an
    unusable spool folder)."""

    def __init__(self, mapping: mmap.mmap, fd: int | None, path: Path | None, node: int, end: int) -> None:
        self.map = mapping
        self.fd = fd
        self.path = path
        self.node = node
        mapping.seek(end)  # where the next record goes; records before it are complete
        self._sealed_end: int | None = None
        self.read = self.committed  # the writer's position: taken, maybe not yet committed
        self.ready = end  # pages before this are mapped and writable (see prepare)
        self.watched = False  # another live process appends to it: its end is looked for (see watch)
        self._seen_end = end
        self.seen_request = 0  # the last flush request the shared writer acted on

    # -- making and opening ------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: Path, name: str, node: int, capacity: int, writer: str | None = None) -> Journal:
        """A new journal, locked by us before it appears under its name (so nobody adopts it); ``writer``
        names the shared writer that writes it (None: this process's own)."""
        path = folder / f"{name}{SUFFIX}"
        staging = folder / f"{name}.new"
        fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, capacity)  # sparse: the disk holds only what is written
            mapping = mmap.mmap(fd, capacity)
            HEADER.pack_into(mapping, 0, MAGIC, node, DATA, 0)
            if writer is not None:
                mapping[WRITER_AT:WRITER_AT + 32] = writer.encode()
            os.rename(staging, path)
        except OSError:
            os.close(fd)
            _unlink(staging)
            raise
        journal = cls(mapping, fd, path, node, DATA)
        journal.prepare()
        return journal

    @classmethod
    def in_memory(cls, node: int, capacity: int) -> Journal:
        """The same journal in anonymous memory: no file, so not safe from the process's death. With no
        ``capacity``, a journal every append finds full (the spool is at its cap)."""
        mapping = mmap.mmap(-1, DATA + capacity)
        HEADER.pack_into(mapping, 0, MAGIC, node, DATA, 0)
        return cls(mapping, None, None, node, DATA)

    @classmethod
    def adopt(cls, path: Path, fd: int) -> Journal:
        """An orphan whose lock we now hold (see spool.Spool.orphans). ValueError if it is not a journal."""
        size = os.fstat(fd).st_size
        if size < DATA:
            raise ValueError("shorter than a journal header")
        mapping = mmap.mmap(fd, size)
        magic, node, committed, _ = HEADER.unpack_from(mapping, 0)
        if magic != MAGIC or not DATA <= committed <= size:
            mapping.close()
            raise ValueError("not a journal (bad header)")
        journal = cls(mapping, fd, path, node, committed)
        journal._sealed_end = journal.complete_end()  # nobody appends to an adopted journal
        mapping.seek(size)
        return journal

    @classmethod
    def watch(cls, path: Path, fd: int) -> Journal:
        """A live journal of another process that waits for the shared writer we are (not locked: its
        process holds the lock). ValueError if it is not a journal."""
        journal = cls.adopt(path, fd)
        journal._sealed_end = None
        journal.watched = True
        return journal

    def owner_gone(self) -> bool:
        """For a watched journal: whether its process is gone (its lock is free, and now ours), so that
        it is adopted from now on, and deleted once written."""
        if not self.watched or self.fd is None:
            return False
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        self.watched = False
        self._sealed_end = self.complete_end()
        return True

    # -- the callers' side -------------------------------------------------------------------------
    def append(self, record: bytes) -> None:
        """Copy one record (ending in a newline) in. JournalFull when it does not fit (or it is sealed)."""
        try:
            self.map.write(record)
        except ValueError:  # past the end, or unmapped by close
            raise JournalFull from None

    @property
    def end(self) -> int:
        """Past the last record appended so far."""
        if self._sealed_end is not None:
            return self._sealed_end
        if self.watched:  # another process's: past its last whole record (see complete_end)
            self._seen_end = self._complete_from(self._seen_end)
            return self._seen_end
        return self.map.tell()

    def prepare(self) -> None:
        """Fault in the pages the next calls will write, on the writer's thread, so that a call does not
        pay for a page fault (and the file system's block allocation) itself. Best effort: a kernel
        without MADV_POPULATE_WRITE leaves the faults to the calls."""
        start = max(self.ready, self.end) & ~(mmap.PAGESIZE - 1)
        stop = min(self.end + AHEAD, len(self.map))
        if stop - start < AHEAD // 4 or self.path is None:
            return
        try:
            self.map.madvise(MADV_POPULATE_WRITE, start, stop - start)
        except (OSError, ValueError):
            self.ready = len(self.map)  # not here: do not try again
            return
        self.ready = stop

    # -- the writer's side -------------------------------------------------------------------------
    @property
    def committed(self) -> int:
        return int(HEADER.unpack_from(self.map, 0)[2])

    def commit(self, offset: int) -> None:
        """Everything before ``offset`` is in the database (or dead-lettered)."""
        struct.pack_into("<Q", self.map, COMMITTED_AT, offset)

    @property
    def sealed(self) -> bool:
        return bool(HEADER.unpack_from(self.map, 0)[3])

    @property
    def cluster(self) -> str | None:
        """The cluster its rows went to (a digest), once some did."""
        mark = bytes(self.map[CLUSTER_AT:CLUSTER_AT + 32])
        return mark.decode() if mark.strip(b"\0") else None

    def mark_cluster(self, cluster: str) -> None:
        self.map[CLUSTER_AT:CLUSTER_AT + 32] = cluster_mark(cluster).encode()

    @property
    def writer(self) -> str | None:
        """The key of the shared writer that writes it while its process lives (None: its own)."""
        mark = bytes(self.map[WRITER_AT:WRITER_AT + 32])
        return mark.decode() if mark.strip(b"\0") else None

    def clear_writer(self) -> None:
        self.map[WRITER_AT:WRITER_AT + 32] = bytes(32)

    @property
    def flush_request(self) -> int:
        return int(struct.unpack_from("<Q", self.map, FLUSH_AT)[0])

    def request_flush(self) -> None:
        """Ask the shared writer to write everything now (and to adopt the orphans)."""
        struct.pack_into("<Q", self.map, FLUSH_AT, self.flush_request + 1)

    def seal(self) -> None:
        """No record will be appended any more: once committed, the journal may go. (An append racing with
        the seal is found by looking for the end, as an adopter does.)"""
        if self._sealed_end is not None:
            return
        self.map.seek(len(self.map))  # every later append finds it full
        self._sealed_end = self.complete_end()
        struct.pack_into("<Q", self.map, SEALED_AT, 1)

    def done(self) -> bool:
        return self.sealed and self.committed >= self.end

    def take(self, limit: int) -> tuple[bytes, int, int]:
        """Up to ``limit`` records from the read position: (their bytes, how many, the offset after them).
        Only a window of the map is copied, sized for ``limit`` records of a typical size."""
        start, end = self.read, self.end
        if start >= end:
            return b"", 0, start
        data = self.map[start:min(end, start + limit * TYPICAL_RECORD)]
        count = data.count(b"\n")
        if count > limit:  # cut after the limit-th record
            data = data[:len(data) - len(data.split(b"\n", limit)[-1])]
            count = limit
        elif not count:  # one record bigger than the window
            data = self.map[start:self.map.find(b"\n", start, end) + 1]
            count = 1
        else:
            data = data[:data.rfind(b"\n") + 1]
        self.read = start + len(data)
        return data, count, self.read

    def first(self) -> bytes:
        """The oldest record not yet taken (for the linger), or b""."""
        if self.read >= self.end:
            return b""
        return self.map[self.read:self.map.find(b"\n", self.read, self.end)]

    def rewind(self) -> None:
        """A write failed: what was taken and not committed is taken again next time."""
        self.read = self.committed

    def complete_end(self) -> int:
        """Past the last whole record (an orphan's: a record its process died copying has no newline)."""
        return self._complete_from(self.committed)

    def _complete_from(self, start: int) -> int:
        """Past the last whole record after ``start``, itself a record's end. A record being copied by
        another process may show its bytes in any order, but none is NUL until copied, and JSON holds no
        NUL: so the first NUL is in the record being copied (or past the last), and the last newline
        before it ends a whole record."""
        nul = self.map.find(b"\0", start)
        limit = len(self.map) if nul < 0 else nul
        return max(start, self.map.rfind(b"\n", start, limit) + 1)

    def torn_bytes(self) -> int:
        nul = self.map.find(b"\0", self.end)
        return (len(self.map) if nul < 0 else nul) - self.end

    def held(self) -> int:
        """Records appended so far, written or not."""
        return self.map[DATA:self.end].count(b"\n")

    def pending(self) -> int:
        """Records not yet committed."""
        return self.map[self.committed:self.end].count(b"\n")

    def waiting(self) -> int:
        """Records not yet taken."""
        return self.map[self.read:self.end].count(b"\n")

    def sync(self) -> None:
        """Down to the disk (durability='spool'): a power loss keeps it too."""
        if self.path is not None:
            self.map.flush()

    # -- letting go --------------------------------------------------------------------------------
    def release(self, *, remove: bool) -> None:
        """Unmap and unlock; with ``remove``, delete it first (everything in it is in the database)."""
        if remove and self.path is not None:
            _unlink(self.path)
        try:
            self.map.close()
        except (BufferError, ValueError):
            pass
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    def forget(self) -> None:
        """In a forked child: let go of the parent's journal without touching it (its lock stays the
        parent's); the child makes its own."""
        self.release(remove=False)


def cluster_mark(cluster: str) -> str:
    """What a journal's header keeps of a cluster's name: a digest, fixed in size."""
    return hashlib.sha256(cluster.encode()).hexdigest()[:32]


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
