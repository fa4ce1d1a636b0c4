"""The local disk spool: append-only, checksummed segment files that outlive the process.

Every segment is ``flock``-ed by the process writing it. A segment nobody holds a lock on belongs to
no live writer (the lock dies with its process), so any logger for the same table may replay it.
Replay skips eventIds already stored, so a segment replayed twice, or a row that
also reached the database before a crash, still lands exactly once.

A segment is created under a temporary name, locked, then renamed into place, so replay never sees
a segment before its owner holds the lock. Forked children close every descriptor they inherit, so
a lock always dies with the process that took it.

Nothing in the folder is trusted that this user did not make: the folder must be a real folder of
ours (loose permissions are repaired), files are opened without following links, and replay takes only
regular files of ours, so a planted link, FIFO or foreign segment is skipped and named in a warning.

Record framing: ``>II`` (length, crc32) then an orjson list of rows, eventId as hex.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..sinks.base import Row

HEADER = struct.Struct(">II")
DEAD_LETTER = "dead-letter.jsonl"
TARGET = "target.json"
NOFOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK  # never through a link; never hang on a FIFO


def default_spool_dir() -> str:
    """Per user: $XDG_STATE_HOME/cofi-eventlog/spool, or ~/.local/state/cofi-eventlog/spool."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "cofi-eventlog", "spool")


def spool_key(target: str, table: str) -> str:
    """One folder per target and table, so a backlog is only ever replayed where it was meant to go."""
    return hashlib.sha256(f"{target}\0{table}".encode()).hexdigest()[:16]


def secure_folder(folder: Path) -> tuple[str | None, str | None]:
    """Make the folder if needed and check it is a folder of this user's alone: (problem, repair).
    A problem means the folder is not used; a repair (permissions tightened) is worth a warning."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = os.lstat(folder)
    except OSError as exc:
        return f"spool folder {folder} unusable: {exc}", None
    if not stat.S_ISDIR(info.st_mode):
        return f"spool folder {folder} is not a folder (a link?); not used", None
    if info.st_uid != os.geteuid():
        return (f"spool folder {folder} belongs to uid {info.st_uid}, not to this user; not used "
                f"(give this process a spool_dir of its own)"), None
    if info.st_mode & 0o077:
        try:
            os.chmod(folder, 0o700)
        except OSError as exc:
            return f"spool folder {folder} is open to other users and could not be closed: {exc}", None
        return None, f"spool folder {folder} was open to other users ({oct(info.st_mode & 0o777)}); set to 0700"
    return None, None


def open_own_file(path: Path, flags: int) -> int:
    """A descriptor for a regular file of this user's, opened without following a link or blocking on
    a FIFO; OSError otherwise."""
    fd = os.open(path, flags | NOFOLLOW, 0o600)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_nlink > 1:
        os.close(fd)
        raise OSError(f"{path.name} is not a regular file of this user's; not used")
    return fd


def has_segments(folder: str) -> bool:
    """Whether a spool folder holds anything to replay (cheap; for loggers that have not started)."""
    try:
        return any(Path(folder).glob("*.seg"))
    except OSError:
        return False


def encode(rows: Sequence[Row]) -> bytes:
    body = orjson.dumps([[r[0].hex(), *r[1:]] for r in rows])
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def decode(data: bytes) -> tuple[list[Row], int]:
    """The rows of every intact record, and how many bytes at the end were torn or corrupt."""
    rows: list[Row] = []
    offset = 0
    while offset + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, offset)
        body = data[offset + HEADER.size: offset + HEADER.size + length]
        if len(body) < length or zlib.crc32(body) != crc:
            break
        rows.extend((bytes.fromhex(r[0]), *r[1:]) for r in orjson.loads(body))
        offset += HEADER.size + length
    return rows, len(data) - offset


class Segment:
    """One open, locked, append-only file. ``append`` is a single ``os.write`` on an O_APPEND
    descriptor, so a record is never interleaved with another."""

    def __init__(self, path: Path) -> None:
        self.path = path
        staging = path.with_suffix(".new")
        self.fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(staging, path)
        except OSError:
            os.close(self.fd)
            _unlink(staging)
            raise
        self.size = 0
        self.dirty = False  # holds events that never entered the queue: only replay delivers them
        self.broken = False  # a write failed (disk full): the tail may be torn, so append no more

    def append(self, record: bytes) -> bool:
        try:
            written = os.write(self.fd, record)
        except OSError:
            written = -1
        if written != len(record):
            self.broken = True
            self.size += max(written, 0)
            return False
        self.size += written
        return True

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError:
            pass

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class Spool:
    """Segments for one table: the writer's spill file, the callers' journal, and replay of both.

    ``lock`` guards the open segments and the byte count; callers in spool mode hold it around a
    journal append and the matching queue append, so that a rotation marker follows every event of
    the segment it rotates.
    """

    def __init__(self, folder: str, *, max_bytes: int, segment_bytes: int = 16 << 20,
                 journal_bytes: int = 1 << 20, warn: Callable[[str, str], None] | None = None) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.journal_bytes = journal_bytes
        self.journal: Segment | None = None
        self._spill: Segment | None = None
        self._held: set[Segment] = set()  # every segment this process has open (rotated ones too)
        self._replaying: set[int] = set()
        self.lock = threading.RLock()  # re-entered only by a SIGTERM handler draining on the same thread
        self._count = 0
        self._warn = warn or (lambda kind, text: None)
        self._refused: set[str] = set()  # names already warned about
        self.problem, repair = secure_folder(self.folder)
        if repair:
            self._warn("spool repaired", repair)
        self.bytes = 0
        self.measure()

    def __repr__(self) -> str:
        return f"Spool({str(self.folder)!r})"

    @property
    def dead_letter_path(self) -> Path:
        return self.folder / DEAD_LETTER

    def measure(self) -> int:
        """Recount the bytes on disk (other processes add and remove segments too)."""
        total = 0
        try:
            for path in [*self.folder.glob("*.seg"), *self.folder.glob("dead-letter*.jsonl")]:
                try:
                    total += os.lstat(path).st_size
                except FileNotFoundError:
                    pass
        except OSError:
            pass
        self.bytes = total
        return total

    def record_target(self, target: str, table: str) -> None:
        """Note, for ``cofi-eventlog spool status``, where this folder's rows go (no credentials)."""
        if self.problem is not None:
            return
        data = orjson.dumps({"target": target, "table": table})
        path = self.folder / TARGET
        try:
            fd = open_own_file(path, os.O_RDONLY)
            try:
                if os.read(fd, 1 << 16) == data:
                    return
            finally:
                os.close(fd)
        except OSError:
            pass
        staging = self.folder / f"{TARGET}.{os.getpid()}.new"
        try:
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.rename(staging, path)
        except OSError:
            _unlink(staging)

    def _new_segment(self, kind: str) -> Segment:
        self._count += 1
        segment = Segment(self.folder / f"{kind}-{os.getpid()}-{time.time_ns()}-{self._count}.seg")
        self._held.add(segment)
        return segment

    def _close(self, segment: Segment) -> None:
        segment.close()
        self._held.discard(segment)

    def _append(self, kind: str, record: bytes) -> str | None:
        """Append to the spill or journal segment (hold ``lock``); None, or why it could not."""
        if self.problem is not None:
            return self.problem
        if self.bytes + len(record) > self.max_bytes:
            return f"spool full ({self.max_bytes} bytes)"
        segment = self._spill if kind == "spill" else self.journal
        try:
            if segment is None:
                segment = self._new_segment(kind)
                if kind == "spill":
                    self._spill = segment
                else:
                    self.journal = segment
        except OSError as exc:
            return f"spool write failed: {exc}"
        before = segment.size
        ok = segment.append(record)
        self.bytes += segment.size - before
        if not ok or (kind == "spill" and segment.size >= self.segment_bytes):
            if kind == "spill":
                self._close(segment)
                self._spill = None
            else:  # a broken journal is rotated like a full one; keep its good records for replay
                segment.dirty = True
        return None if ok else "spool write failed (disk full?)"

    # -- the writer's spill file (writer thread, or the closer at a deadline) -----------------------
    def spill(self, rows: Sequence[Row]) -> str | None:
        """Append rows; None, or why they could not be kept (the caller counts the drop)."""
        record = encode(rows)
        with self.lock:
            return self._append("spill", record)

    def close_spill(self) -> None:
        """Release the spill segment so that replay (ours or another process's) can take it."""
        with self.lock:
            if self._spill is not None:
                self._close(self._spill)
                self._spill = None

    # -- the callers' journal (hold ``lock`` around these) ------------------------------------------------
    def journal_append(self, record: bytes, *, queued: bool) -> str | None:
        """Append one caller's record; ``queued=False`` marks the segment as holding events that only
        replay will deliver. None, or why it could not be kept."""
        problem = self._append("journal", record)
        if problem is None and not queued and self.journal is not None:
            self.journal.dirty = True
        return problem

    def journal_due(self) -> bool:
        """The journal should be rotated: it is big, broken, or holds events only replay delivers."""
        journal = self.journal
        return journal is not None and (journal.size >= self.journal_bytes or journal.dirty or journal.broken)

    def swap_journal(self) -> Segment | None:
        old, self.journal = self.journal, None
        return old

    def retire(self, segment: Segment) -> None:
        """A rotated journal: deleted when every event in it was written or spilled, else left for
        replay. The spill file is synced first, so what the journal held is on disk somewhere."""
        if not segment.dirty:
            with self.lock:
                if self._spill is not None:
                    self._spill.sync()
            _unlink(segment.path)
            with self.lock:
                self.bytes -= segment.size
        with self.lock:
            self._close(segment)

    def sync(self) -> None:
        """fsync every segment this process has open, and the folder (flush() in spool mode)."""
        with self.lock:
            for segment in self._held:
                segment.sync()
        try:
            fd = os.open(self.folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    # -- replay --------------------------------------------------------------------------------------
    def replayable(self, last: Collection[str] = ()) -> Iterator[tuple[Path, int]]:
        """Segments no live writer holds, oldest first (names in ``last`` after the others), each
        locked by us while the caller replays it.

        Yields (path, fd); the caller reads, writes, then calls :meth:`finish` or :meth:`release`.
        """
        try:
            paths = list(self.folder.glob("*.seg"))
        except OSError:
            return
        for path in sorted(paths, key=lambda p: (p.name in last, _age(p))):
            try:
                fd = open_own_file(path, os.O_RDWR)
            except OSError as exc:
                self._refuse(path, exc)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_nlink == 0:  # replayed and removed by someone else meanwhile
                    raise BlockingIOError
            except OSError:
                os.close(fd)
                continue
            self._replaying.add(fd)
            yield path, fd

    def _refuse(self, path: Path, exc: OSError) -> None:
        if path.name not in self._refused and path.exists():  # vanished meanwhile: replayed by another
            self._refused.add(path.name)
            self._warn(f"skip {path.name}", f"{path} skipped: {exc.strerror or exc}")

    def quarantine(self, path: Path, fd: int) -> None:
        """A segment with no intact record is not ours to replay, nor to delete: set it aside."""
        try:
            os.rename(path, path.with_name(path.name + ".bad"))
        except OSError:
            pass
        self.release(fd)
        self.measure()

    @staticmethod
    def read(fd: int) -> tuple[list[Row], int]:
        with os.fdopen(os.dup(fd), "rb") as handle:
            return decode(handle.read())

    def finish(self, path: Path, fd: int) -> None:
        size = os.fstat(fd).st_size
        _unlink(path)
        self.release(fd)
        with self.lock:
            self.bytes -= size

    def release(self, fd: int) -> None:
        self._replaying.discard(fd)
        os.close(fd)

    def dead_letter(self, entry: dict[str, Any]) -> str | None:
        """Keep a row the database will never take, with the reason, for a person to look at. None, or
        why it could not be kept (the caller counts that row as dropped).

        One line per entry, appended under an ``flock`` (other processes append too); a short write is
        cut back, so the file never holds half a line. It counts towards ``max_bytes``."""
        line = orjson.dumps(entry, default=_text_of) + b"\n"
        path = self.dead_letter_path
        with self.lock:
            if self.problem is not None:
                return self.problem
            if self.bytes + len(line) > self.max_bytes:
                return f"spool full ({self.max_bytes} bytes)"
            try:
                fd = self._open_dead_letter_file()
            except OSError as exc:
                return f"dead-letter file {path} unusable: {exc.strerror or exc}"
            try:
                end = os.fstat(fd).st_size
                try:
                    written = os.write(fd, line)
                except OSError as exc:
                    written, error = -1, exc.strerror
                else:
                    error = "short write"
                if written != len(line):
                    os.ftruncate(fd, end)
                    return f"dead-letter file {path} not written ({error}; disk full?)"
                self.bytes += written
                return None
            except OSError as exc:
                return f"dead-letter file {path} not written: {exc.strerror or exc}"
            finally:
                os.close(fd)

    def _open_dead_letter_file(self) -> int:
        """The dead-letter file, opened and flock-ed; again if a retry moved it aside meanwhile."""
        path = self.dead_letter_path
        for _ in range(100):
            fd = open_own_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_ino == os.lstat(path).st_ino:
                    return fd
            except OSError:
                pass
            os.close(fd)
        raise OSError(f"{path} keeps moving")

    def claim_dead_letters(self) -> Path | None:
        """Move the dead-letter file aside for a retry (writers then start a new one); None if empty.
        A claimed file that a crash left behind is listed and retried like the live one."""
        claimed = self.folder / f"dead-letter.retry-{os.getpid()}-{time.time_ns()}.jsonl"
        with self.lock:
            try:
                fd = open_own_file(self.dead_letter_path, os.O_RDONLY)
            except OSError:
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # no append is half-way through
                os.rename(self.dead_letter_path, claimed)
            finally:
                os.close(fd)
        return claimed

    def forget_inherited(self) -> None:
        """In a forked child: close every descriptor inherited from the parent (its locks stay the
        parent's and die with it), without deleting anything."""
        for segment in list(self._held):
            segment.close()
        for fd in list(self._replaying):
            try:
                os.close(fd)
            except OSError:
                pass
        self._held.clear()
        self._replaying.clear()
        self.journal, self._spill = None, None
        self.lock = threading.RLock()

    def close(self) -> None:
        """Release every segment this process holds; what is in them stays for replay."""
        with self.lock:
            for segment in list(self._held):
                self._close(segment)
            self.journal, self._spill = None, None


def read_dead_letters(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The entries of a dead-letter file, and how many lines could not be read."""
    entries: list[dict[str, Any]] = []
    broken = 0
    fd = open_own_file(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as handle:
        for line in handle:
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                broken += 1
                continue
            if isinstance(entry, dict):
                entries.append(entry)
            else:
                broken += 1
    return entries, broken


def _text_of(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


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
