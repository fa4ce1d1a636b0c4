"""The local disk spool: append-only, checksummed segment files that outlive the process.

Every segment is ``flock``-ed by the process writing it. A segment nobody holds a lock on belongs to
no live writer (the lock dies with its process), so any logger for the same table may replay it.
Replay goes through ``INSERT IGNORE`` on the eventId, so a segment replayed twice, or a row that
also reached the database before a crash, still lands exactly once.

Record framing: ``>II`` (length, crc32) then an orjson list of rows, eventId as hex.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from ..sinks.base import Row

HEADER = struct.Struct(">II")


def default_spool_dir() -> str:
    """Per user: $XDG_STATE_HOME/cofi-eventlog/spool, or ~/.local/state/cofi-eventlog/spool."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "cofi-eventlog", "spool")


def spool_key(target: str, table: str) -> str:
    """One folder per database and table, so a backlog is only ever replayed where it was meant to go."""
    return hashlib.sha256(f"{target}\0{table}".encode()).hexdigest()[:16]


def encode(rows: Sequence[Row]) -> bytes:
    body = orjson.dumps([[r[0].hex(), *r[1:]] for r in rows])
    return HEADER.pack(len(body), _crc(body)) + body


def _crc(body: bytes) -> int:
    return zlib.crc32(body)


def decode(data: bytes) -> tuple[list[Row], int]:
    """The rows of every intact record, and how many bytes at the end were torn or corrupt."""
    rows: list[Row] = []
    offset = 0
    while offset + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, offset)
        body = data[offset + HEADER.size: offset + HEADER.size + length]
        if len(body) < length or _crc(body) != crc:
            break
        rows.extend((bytes.fromhex(r[0]), *r[1:]) for r in orjson.loads(body))
        offset += HEADER.size + length
    return rows, len(data) - offset


class Segment:
    """One open, locked, append-only file. ``append`` is a single ``os.write`` on an O_APPEND
    descriptor, so several threads may append whole records at once without a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.size = 0
        self.dirty = False  # holds events that have not reached the database

    def append(self, record: bytes) -> None:
        os.write(self.fd, record)
        self.size += len(record)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class Spool:
    """Segments for one table: the writer's spill file, the callers' journal, and replay of both."""

    def __init__(self, folder: str, *, max_bytes: int, segment_bytes: int = 16 << 20) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.journal: Segment | None = None
        self._spill: Segment | None = None
        self.lock = threading.Lock()
        self._count = 0
        self.bytes = sum(p.stat().st_size for p in self.folder.glob("*.seg"))

    def __repr__(self) -> str:
        return f"Spool({str(self.folder)!r})"

    def _new_segment(self, kind: str) -> Segment:
        self._count += 1
        return Segment(self.folder / f"{kind}-{os.getpid()}-{time.time_ns()}-{self._count}.seg")

    def has_room(self, size: int) -> bool:
        return self.bytes + size <= self.max_bytes

    # -- the writer's spill file (writer thread, or the closer at a deadline) -----------------------
    def spill(self, rows: Sequence[Row]) -> bool:
        """Append rows; False when the cap leaves no room (the caller counts the drop)."""
        record = encode(rows)
        with self.lock:
            if not self.has_room(len(record)):
                return False
            if self._spill is None:
                self._spill = self._new_segment("spill")
            self._spill.append(record)
            self.bytes += len(record)
            if self._spill.size >= self.segment_bytes:
                self._spill.close()
                self._spill = None
        return True

    def close_spill(self) -> None:
        """Release the spill segment so that replay (ours or another process's) can take it."""
        with self.lock:
            if self._spill is not None:
                self._spill.close()
                self._spill = None

    # -- the callers' journal (hold ``lock`` around these) ------------------------------------------------
    def journal_append(self, record: bytes, *, queued: bool) -> bool:
        """Append one caller's record; ``queued=False`` marks the segment as holding events that only
        replay will deliver. False when the cap leaves no room."""
        if not self.has_room(len(record)):
            return False
        if self.journal is None:
            self.journal = self._new_segment("journal")
        self.journal.append(record)
        if not queued:
            self.journal.dirty = True
        self.bytes += len(record)
        return True

    def swap_journal(self) -> Segment | None:
        old, self.journal = self.journal, None
        return old

    def retire(self, segment: Segment) -> None:
        """A rotated journal: deleted when every event in it reached the queue, else left for replay."""
        if not segment.dirty:
            _unlink(segment.path)
            with self.lock:
                self.bytes -= segment.size
        segment.close()

    # -- replay --------------------------------------------------------------------------------------
    def replayable(self) -> Iterator[tuple[Path, int]]:
        """Segments no live writer holds, oldest first, each locked by us while the caller replays it.

        Yields (path, fd); the caller reads, writes, then calls :meth:`finish` or :meth:`release`.
        """
        for path in sorted(self.folder.glob("*.seg"), key=_age):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_nlink == 0:  # replayed and removed by someone else meanwhile
                    raise BlockingIOError
            except BlockingIOError:
                os.close(fd)
                continue
            yield path, fd

    @staticmethod
    def read(fd: int) -> tuple[list[Row], int]:
        with os.fdopen(os.dup(fd), "rb") as handle:
            return decode(handle.read())

    def finish(self, path: Path, fd: int) -> None:
        size = os.fstat(fd).st_size
        _unlink(path)
        os.close(fd)
        with self.lock:
            self.bytes -= size

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)

    def dead_letter(self, row: Row, reason: str) -> None:
        """Rows the database will never take, kept with the reason for a person to look at."""
        line = orjson.dumps({"reason": reason, "row": [row[0].hex(), *row[1:]]}) + b"\n"
        with self.lock, open(self.folder / "dead-letter.jsonl", "ab") as handle:
            handle.write(line)

    def forget_inherited(self) -> None:
        """In a forked child: drop the parent's descriptors (and with them nothing of its locks)."""
        for segment in (self.journal, self._spill):
            if segment is not None:
                segment.close()
        self.journal, self._spill = None, None
        self.lock = threading.Lock()

    def close(self) -> None:
        self.close_spill()
        with self.lock:
            if self.journal is not None:
                self.journal.close()
            self.journal = None


def _age(path: Path) -> int:
    try:
        return int(path.name.split("-")[2])
    except (IndexError, ValueError):
        return 0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass

