"""What is in the spool, and getting it out: the public face of the ``cofi-eventlog spool`` command.

A spool folder holds the journals of the processes logging to one target (each event goes there
before its call returns) and what the database refused (dead letters). Loggers write the journals of
processes that are gone by themselves; these functions are for a person: to see what is waiting and
where it is meant to go, to write it now (into another database if the old one is gone), and to retry
dead letters once their cause is fixed.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from .engine.diagnostics import Warner
from .engine.isolate import Isolator
from .engine.journal import SUFFIX, Journal
from .engine.leadership import holder
from .engine.spool import TARGET, Spool, default_spool_dir, open_own_file, read_dead_letters
from .engine.stats import WriterStats
from .engine.writer import Writer
from .events import EventIds
from .logger import EventLogger
from .sinks import Row, SinkError

NO_CAP = 1 << 62  # a person emptying a spool is not held to the loggers' cap


@dataclass
class SpoolFolder:
    path: Path
    target: str | None = None  # where its rows go, without credentials, as the last logger saw it
    table: str | None = None
    journals: int = 0
    held: int = 0  # journals a running process is appending to or writing now
    events: int = 0  # events not yet in the database
    bytes: int = 0
    torn_bytes: int = 0
    oldest: datetime | None = None  # createdAt of the oldest waiting event
    dead_letters: int = 0
    writers: list[int] = field(default_factory=list)  # pids of the host's shared writers writing it now
    set_aside: list[str] = field(default_factory=list)  # *.bad files and files that are not ours


@dataclass
class Outcome:
    written: int = 0  # rows the database took (or had already)
    dead_lettered: int = 0
    left: int = 0  # rows still waiting
    error: str | None = None


def spool_folders(spool_dir: str | None = None) -> list[SpoolFolder]:
    """Every spool folder under ``spool_dir`` (default: this user's), with what it holds."""
    root = Path(spool_dir or default_spool_dir())
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []
    return [inspect_folder(p) for p in folders]


def inspect_folder(folder: Path) -> SpoolFolder:
    info = SpoolFolder(folder)
    try:
        target = orjson.loads(os.read(fd := open_own_file(folder / TARGET, os.O_RDONLY), 1 << 16))
        os.close(fd)
        info.target, info.table = str(target.get("target")), str(target.get("table"))
    except (OSError, orjson.JSONDecodeError, AttributeError):
        pass
    oldest: int | None = None
    for path in sorted(folder.iterdir()):
        if path.name.endswith(".bad"):
            info.set_aside.append(path.name)
        elif path.suffix == SUFFIX:
            try:
                fd = open_own_file(path, os.O_RDONLY)
            except OSError:
                info.set_aside.append(path.name)
                continue
            try:
                info.held += _held(fd)
                events, first, torn, size = _pending(fd)
            except (OSError, ValueError):
                info.set_aside.append(path.name)
                continue
            finally:
                os.close(fd)
            info.journals += 1
            info.events += events
            info.bytes += size
            info.torn_bytes += torn
            if first is not None:
                oldest = first if oldest is None else min(oldest, first)
        elif path.name.startswith("dead-letter") and path.suffix == ".jsonl":
            try:
                info.dead_letters += len(read_dead_letters(path)[0])
            except OSError:
                info.set_aside.append(path.name)
    if oldest is not None:
        info.oldest = datetime.fromtimestamp(oldest / 1e9, timezone.utc)
    info.writers = sorted(holder(folder).values())
    return info


def _pending(fd: int) -> tuple[int, int | None, int, int]:
    """A journal's events not yet in the database, the call time (ns) of the oldest, its torn bytes, and
    the bytes it takes on disk."""
    size = os.fstat(fd).st_blocks * 512
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapping:
        journal = Journal(mapping, None, None, 0, 0)  # read only: never released through this object
        start, end = journal.committed, journal.complete_end()
        events = mapping[start:end].count(b"\n")
        first = None
        if events:
            item = orjson.loads(mapping[start:mapping.find(b"\n", start)])
            first = int(item[10]) if isinstance(item, list) else int(item["row"][10]) * 1000
        nul = mapping.find(b"\0", end)
        return events, first, (len(mapping) if nul < 0 else nul) - end, size


def _held(fd: int) -> int:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return 1
    fcntl.flock(fd, fcntl.LOCK_UN)
    return 0


def folder_of(dsn: str, table: str = "batchExecutionLog", spool_dir: str | None = None) -> Path:
    """The folder a logger for this DSN and table spools to."""
    return Path(EventLogger(dsn, table=table, spool_dir=spool_dir).spool_folder)


def replay(folder: str | Path, dsn: str, table: str | None = None, *, batch_size: int = 1000) -> Outcome:
    """Write every journal of ``folder`` that no running process holds into ``dsn`` now. The table is
    the one the folder was made for, unless given. Rows already there are skipped."""
    folder = Path(folder)
    table = table or inspect_folder(folder).table or "batchExecutionLog"
    warn = Warner()
    spool = Spool(str(folder), max_bytes=NO_CAP, warn=warn)
    if spool.problem:
        return Outcome(error=spool.problem)
    writer = Writer(deque(), _sink(dsn, table), spool, EventIds(), batch_size=batch_size, flush_interval=1.0,
                    adopt_interval=0.0, idle_timeout=60.0, appended=lambda: 0, dropped=lambda: 0, borrowed=list,
                    warn=warn)
    done = writer.replay_now()
    left = inspect_folder(folder)
    dead = writer.stats.dead_lettered
    return Outcome(written=writer.stats.adopted - dead, dead_lettered=dead,
                   left=left.events, error=None if done else writer.stats.last_error)


def dead_letters(folder: str | Path) -> list[dict[str, Any]]:
    """Every dead-letter entry in the folder: ``{"reason": ..., "row": [eventId hex, batchId, ...]}``."""
    out: list[dict[str, Any]] = []
    for path in sorted(Path(folder).glob("dead-letter*.jsonl")):
        out.extend(read_dead_letters(path)[0])
    return out


def retry_dead_letters(folder: str | Path, dsn: str, table: str | None = None) -> Outcome:
    """Send the dead-lettered rows to the database again, once their cause is fixed (a column widened,
    a constraint relaxed). Rows it still refuses, and entries that hold no row, stay dead letters."""
    folder = Path(folder)
    table = table or inspect_folder(folder).table or "batchExecutionLog"
    spool = Spool(str(folder), max_bytes=NO_CAP)
    if spool.problem:
        return Outcome(error=spool.problem)
    claimed = [p for p in folder.glob("dead-letter.retry-*.jsonl")]  # left by an interrupted retry
    fresh = spool.claim_dead_letters()
    claimed += [fresh] if fresh else []
    outcome = Outcome()
    keep: list[dict[str, Any]] = []  # entries that stay dead letters
    rows: list[Row] = []
    sent: list[dict[str, Any]] = []  # the entries of ``rows``
    for path in claimed:
        for entry in read_dead_letters(path)[0]:
            row = _row_of(entry)
            if row is None:
                keep.append(entry)
            else:
                rows.append(row)
                sent.append(entry)
    refused: list[dict[str, Any]] = []
    sink = _sink(dsn, table)
    isolator = Isolator(sink, WriterStats(), lambda row, reason: refused.append(_entry(row, reason)))
    try:
        for start in range(0, len(rows), 1000):
            try:
                isolator.write(rows[start:start + 1000])
            except SinkError as exc:  # the database went away: the rest stay dead letters, as they were
                outcome.error = str(exc)
                keep.extend(sent[start:])
                break
            outcome.written += min(1000, len(rows) - start)
    finally:
        sink.close()
    outcome.written -= len(refused)
    outcome.dead_lettered = len(refused)
    for entry in [*keep, *refused]:
        problem = spool.dead_letter(entry)
        if problem:  # the claimed files stay, so nothing is lost; say so
            outcome.error = f"{problem}; the claimed files {', '.join(p.name for p in claimed)} were kept"
            return outcome
    for path in claimed:
        path.unlink()
    outcome.left = len(keep) + len(refused)
    return outcome


def _sink(dsn: str, table: str) -> Any:
    return EventLogger(dsn, table=table)._open_sink()


def _row_of(entry: dict[str, Any]) -> Row | None:
    row = entry.get("row")
    if not isinstance(row, list) or len(row) != 11:
        return None
    try:
        return (bytes.fromhex(row[0]), *row[1:])
    except (TypeError, ValueError):
        return None


def _entry(row: Row, reason: str) -> dict[str, Any]:
    return {"reason": reason, "row": [row[0].hex(), *row[1:]]}


__all__ = ["Outcome", "SpoolFolder", "dead_letters", "folder_of", "inspect_folder", "replay",
           "retry_dead_letters", "spool_folders"]
