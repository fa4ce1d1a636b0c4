"""The spool folder of one target and table: the journals of the processes logging there (see
journal.py), the rows the database refused (the dead-letter file), and a note of where rows go.

Nothing in the folder is trusted that this user did not make: the folder must be a real folder of
ours (loose permissions are repaired), files are opened without following links, and adoption takes
only regular files of ours, so a planted link, FIFO or foreign file is skipped and named in a warning.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from .journal import CLUSTER_AT, DATA, SUFFIX, Journal

DEAD_LETTER = "dead-letter.jsonl"
TARGET = "target.json"
MIN_JOURNAL = DATA + (60 << 10)  # smaller than this, a journal would hold too few events to be worth making
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


class Spool:
    """One spool folder. The writer thread makes journals, adopts orphans and keeps dead letters here;
    ``lock`` guards the byte count and the dead-letter file within this process."""

    def __init__(self, folder: str, *, max_bytes: int, warn: Callable[[str, str], None] | None = None) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
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
        """The bytes journals (as written so far) and dead letters take on disk, other processes' too."""
        total = 0
        try:
            for path in [*self.folder.glob(f"*{SUFFIX}"), *self.folder.glob("dead-letter*.jsonl")]:
                try:
                    total += os.lstat(path).st_blocks * 512
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

    # -- journals ----------------------------------------------------------------------------------
    def new_journal(self, node: int, capacity: int, writer: str | None = None) -> Journal:
        """A journal for this process, no bigger than what is left under ``max_bytes``; ``SpoolFull`` when
        that is too little, OSError when the folder cannot have one. ``writer``: the key of the shared
        writer that is to write it."""
        if self.problem is not None:
            raise OSError(self.problem)
        capacity = min(capacity, self.max_bytes - self.measure())
        if capacity < MIN_JOURNAL:
            raise SpoolFull(f"spool full ({self.max_bytes} bytes)")
        self._count += 1
        return Journal.create(self.folder, f"journal-{os.getpid()}-{time.time_ns()}-{self._count}", node, capacity,
                              writer)

    def orphans(self, skip: set[str], writer: str | None = None) -> Iterator[Journal]:
        """Journals no live process holds (their lock is free), oldest first, each now locked by us.
        ``skip``: names this process holds already. With ``writer`` (a shared writer's key), also the
        live journals that wait for that writer, watched (``Journal.watch``), not locked."""
        try:
            paths = sorted(self.folder.glob(f"*{SUFFIX}"), key=_age)
        except OSError:
            return
        for path in paths:
            if path.name in skip:
                continue
            try:
                fd = open_own_file(path, os.O_RDWR)
            except OSError as exc:
                self._refuse(path, exc)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live process's
                if writer is None:
                    os.close(fd)
                elif (live := self._watched(path, fd, writer)) is not None:
                    yield live
                continue
            if os.fstat(fd).st_nlink == 0:  # written and removed by another adopter meanwhile
                os.close(fd)
                continue
            try:
                yield Journal.adopt(path, fd)
            except (ValueError, OSError) as exc:
                self._set_aside(path, fd, str(exc))

    def orphan_names(self, skip: set[str], cluster: str | None) -> set[str]:
        """The names of the journals no live process holds now, for a process whose shared writer adopts
        them; only those of ``cluster`` (a cluster mark) or of none, when it is given. Each lock is only
        tried, and let go of at once."""
        names: set[str] = set()
        try:
            paths = list(self.folder.glob(f"*{SUFFIX}"))
        except OSError:
            return names
        for path in paths:
            if path.name in skip:
                continue
            try:
                fd = open_own_file(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                mark = os.pread(fd, 32, CLUSTER_AT).strip(b"\0").decode(errors="replace") or None
                if cluster is None or mark in (None, cluster):
                    names.add(path.name)
            except OSError:
                pass
            finally:
                os.close(fd)
        return names

    @staticmethod
    def _watched(path: Path, fd: int, writer: str) -> Journal | None:
        """A live journal that waits for ``writer`` and still has something to write, or None (and ``fd``
        closed)."""
        try:
            journal = Journal.watch(path, fd)
        except (ValueError, OSError):
            os.close(fd)
            return None
        if journal.writer == writer and not journal.done():
            return journal
        journal.release(remove=False)
        return None

    def _refuse(self, path: Path, exc: OSError) -> None:
        if path.name not in self._refused and path.exists():  # vanished meanwhile: adopted by another
            self._refused.add(path.name)
            self._warn(f"skip {path.name}", f"{path} skipped: {exc.strerror or exc}")

    def _set_aside(self, path: Path, fd: int, why: str) -> None:
        """A file named like a journal that is not one: not ours to write, nor to delete."""
        try:
            os.rename(path, path.with_name(path.name + ".bad"))
        except OSError:
            pass
        os.close(fd)
        self._warn(f"bad {path.name}", f"{path} is {why}; set aside as {path.name}.bad")

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


class SpoolFull(OSError):
    """The spool is at its ``max_spool_bytes``."""




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
        return int(path.name.split("-")[2])  # journal-PID-TIMENS-N.jnl
    except (IndexError, ValueError):
        return 0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def has_journals(folder: str) -> bool:
    """Whether a spool folder holds a journal (cheap; for a logger that has not started)."""
    try:
        return any(Path(folder).glob(f"*{SUFFIX}"))
    except OSError:
        return False
