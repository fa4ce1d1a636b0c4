"""The engine of one logger in one process: admission into the journal, the writer, flush and close.

Admission is the whole of a call's work: the call's arguments, serialized by orjson, are copied into
this process's journal (see journal.py), and the writer is woken when a batch is full. Arguments that
orjson does not take as they are (an exception, a Decimal, a lone surrogate, a NaN...) are made into
their row on the caller's thread by :func:`events.normalize`, which records every coercion.

The engine starts on the first call in its process (and again in a forked child, which keeps none
of its parent's journals, connection or thread). After :meth:`close` calls still land in a journal,
which the next logger of the same target adopts once this process is gone.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable

import orjson

from ..events import EventIds, Raw, normalize
from ..sinks.base import Sink
from . import lifecycle
from .diagnostics import BUSY, Warner, in_diagnostics
from .journal import Journal, JournalFull
from .leadership import Leadership
from .spool import Spool, SpoolFull, has_journals
from .stats import AtomicCounter
from .writer import Writer

FAST = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS \
    | orjson.OPT_APPEND_NEWLINE
MAX_RECORD = 2 << 20  # a bigger call is normalized (its metadata bounded) before it is journaled
COUNTS = ("coerced", "dropped_queue_full", "dropped_spool_full", "dropped_recursion")

_dumps = orjson.dumps
# Journals of closed loggers, by spool folder: calls made after close() go there, and a live logger of the
# same folder in this process writes them (it cannot adopt them: they stay locked while this process lives).
_late: dict[str, list[Journal]] = {}


def late_journals(folder: str) -> list[Journal]:
    return list(_late.get(folder, ()))


def _may_hold_nan(item: Raw) -> bool:
    """Whether the call carries something a float could hide in: a payload, metadata, a float count."""
    return item[8] is not None or item[9] is not None or type(item[6]) is float or type(item[7]) is float


class Engine:
    def __init__(self, spool_folder: str, open_sink: Callable[[], Sink], *, target: str, table: str,
                 batch_size: int, flush_interval: float, max_queue: int, on_full: str, block_timeout: float,
                 strict: bool, sync: bool, max_spool_bytes: int, journal_bytes: int, adopt_interval: float,
                 idle_timeout: float, exit_timeout: float, warn: Warner, shared_writer: str | None = None) -> None:
        self.folder = spool_folder
        self._open_sink = open_sink
        self._target = target
        self._table = table
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._limit = max_queue if on_full != "spill" else 0
        self._on_full = on_full
        self._block_timeout = block_timeout
        self._strict = strict
        self._sync = sync
        self._max_spool_bytes = max_spool_bytes
        self._journal_bytes = journal_bytes
        self._adopt_interval = adopt_interval
        self._idle_timeout = idle_timeout
        self._exit_timeout = exit_timeout
        self._warn = warn
        self._shared = shared_writer  # the key of the host's shared writer for this target, or None
        self.seq = AtomicCounter()  # numbers every call; with its time (and the journal's node) it fixes the eventId
        self._fresh()

    def _fresh(self) -> None:
        """The state of a logger that has not logged in this process yet."""
        self.ids = EventIds()
        self._appended = AtomicCounter()  # events in this process's journals
        self._count_appended = self._appended.add
        self._start_lock = threading.Lock()
        self._wake = threading.Event()  # the writer's, once it runs
        self._wake_at = [self.batch_size - 1]  # the appended count that makes a whole batch wait (writer sets it)
        self.last_writer: Writer | None = None  # for the figures after close
        self._left = 0  # events its journals held when the logger closed and let go of them
        self.own: deque[Journal] = deque()
        self.journal: Journal | None = None  # the one calls go to
        self.spool: Spool | None = None
        self.writer: Writer | None = None
        self.closed = False
        self._counts = {name: AtomicCounter() for name in COUNTS}
        self._full_until = 0.0

    # -- admission (the callers' threads) ------------------------------------------------------------
    def admit(self, item: Raw) -> None:
        """Put one call in the journal. Never raises, except for bad input in strict mode."""
        if BUSY[0] and in_diagnostics():  # a handler forwarding one of our own warnings back in
            self._counts["dropped_recursion"].add()
            return
        try:
            record = _dumps(item, option=FAST)
        except TypeError:
            record = self._careful(item)
        else:
            # orjson writes NaN and the infinities as null, silently: a null that is no None of the call
            if self._strict or len(record) > MAX_RECORD or (
                    _may_hold_nan(item) and record.count(b"null") != item.count(None)):
                record = self._careful(item)
        journal = self.journal or self._started()
        if self._limit and self._over_limit():
            return
        try:
            journal.map.write(record)  # Journal.append, inlined: the path every call takes
        except ValueError:  # full, sealed, or unmapped by close
            return self._rotate_and_append(record)
        if self._count_appended() >= self._wake_at[0] and not self._wake.is_set():  # a whole batch waits
            self._wake.set()

    def _careful(self, item: Raw) -> bytes:
        """The call as its finished row, every coercion recorded (strict mode: raised)."""
        row, notes = normalize(item, self.ids)
        if notes:
            if self._strict:
                raise notes[0].as_error()
            self._counts["coerced"].add()
        return _dumps({"row": [row[0].hex(), *row[1:]]}, option=orjson.OPT_APPEND_NEWLINE)

    def _over_limit(self) -> bool:
        """on_full='block' or 'drop' with max_queue events waiting: wait for the writer up to block_timeout,
        or drop (counted)."""
        writer = self.writer
        if writer is None or self.appended - writer.committed < self._limit:
            return False
        if self._on_full == "block":
            deadline = time.monotonic() + self._block_timeout
            writer.hurry()
            while self.appended - writer.committed >= self._limit and time.monotonic() < deadline:
                writer.wake.set()  # a follower counts what the host's writer committed when woken
                time.sleep(0.001)
            return False
        self._counts["dropped_queue_full"].add()
        self._warn("drop", f"{self._limit} events waiting; events dropped (on_full='drop')")
        return True

    @property
    def appended(self) -> int:
        """Events in this process's journals."""
        return self._appended.value

    def _rotate_and_append(self, record: bytes) -> None:
        """The journal is full (or sealed by close): seal it and start the next one, or drop at the cap."""
        with self._start_lock:
            journal = self.journal
            if journal is not None:
                try:
                    journal.append(record)  # another thread rotated meanwhile
                    self._count_appended()
                    return
                except JournalFull:
                    journal.seal()
            fresh = self._new_journal()
            if fresh is None:
                self._counts["dropped_spool_full"].add()
                return
            fresh.append(record)
            self._count_appended()
            self.own.append(fresh)
            self.journal = fresh
        self._wake.set()

    def _new_journal(self) -> Journal | None:
        """A journal on disk; in memory if the folder cannot hold one (counted, warned); None at the cap."""
        assert self.spool is not None
        if time.monotonic() < self._full_until:
            return None
        try:
            return self.spool.new_journal(self.ids.node, self._journal_bytes, self._shared)
        except SpoolFull as exc:
            self._full_until = time.monotonic() + 1.0
            self._warn("full", f"{exc}; events dropped until the database takes some")
            return None
        except OSError as exc:
            self._warn("journal", f"no journal in {self.folder} ({exc}): events are kept in memory only, "
                                  f"and lost if this process dies")
            return Journal.in_memory(self.ids.node, self._journal_bytes)

    # -- the writer ----------------------------------------------------------------------------------
    def _started(self) -> Journal:
        """Start in this process (first call, or first in a forked child): spool, journal, writer."""
        with self._start_lock:
            if self.journal is None:
                if self.spool is None:
                    self.spool = Spool(self.folder, max_bytes=self._max_spool_bytes, warn=self._warn)
                    self.spool.record_target(self._target, self._table)
                journal = self._new_journal() or Journal.in_memory(self.ids.node, 0)  # at the cap: every call drops
                self.own.append(journal)
                self.journal = journal
                if self.closed:
                    _late.setdefault(self.folder, []).append(journal)
                else:
                    shared = self._shared if self.spool.problem is None else None
                    leadership = Leadership(self.spool.folder, shared) if shared is not None else None
                    self.writer = Writer(self.own, self._open_sink(), self.spool, self.ids,
                                         batch_size=self.batch_size, flush_interval=self.flush_interval,
                                         adopt_interval=self._adopt_interval, idle_timeout=self._idle_timeout,
                                         appended=lambda: self.appended, dropped=self.dropped,
                                         borrowed=lambda: late_journals(self.folder), wake_at=self._wake_at,
                                         warn=self._warn, leadership=leadership)
                    self._wake = self.writer.wake
                    self.writer.start()
                    lifecycle.track(self)
            return self.journal

    def forget_parent(self) -> None:
        """In a forked child: the parent's journals, connection and thread stay the parent's."""
        writer = self.writer
        for journal in self.own:
            journal.forget()
        if writer is not None:
            writer.sink.abandon()
            for journal in [*(a for a, _ in writer.adopted), *writer.peers]:
                journal.forget()
            if writer.leadership is not None:
                writer.leadership.forget()
        self._fresh()

    # -- flush and close (any thread) -----------------------------------------------------------------
    def flush(self, timeout: float | None) -> bool:
        """True once every event admitted before the call, and every orphan found meanwhile, is in the
        database (or dead-lettered), with nothing dropped since the last answer. Waits through outages,
        retries and failover up to ``timeout``."""
        if self.journal is None:
            if self.closed:
                return True
            self._started()
        writer = self.writer
        if writer is None:  # closed: what was logged since stays in the journal for the next logger
            return self.unwritten() == 0
        if self._sync:
            for journal in list(self.own):
                journal.sync()
        return writer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Write what there is within ``timeout``, then stop the writer and let go of the journals: those
        fully written are deleted, the others left for the next logger of this target to adopt."""
        if self.writer is None and self.journal is None and not self.closed and has_journals(self.folder):
            self._started()  # a logger that never logged still adopts what processes that are gone left
        self.closed = True
        writer = self.writer
        if writer is None:
            return
        writer.stop(timeout, lambda: self._let_go(writer))
        with self._start_lock:
            self.writer, self.last_writer = None, writer
            self.journal = None  # calls from now on go to a late journal (see _started)
        left = self.unwritten()
        if left:
            self._warn("left", f"{left} events not written yet are kept in {self.folder}; the next logger "
                               f"of this target writes them (or: cofi-eventlog spool replay)")

    def _let_go(self, writer: Writer) -> None:
        """Seal and release the journals of the writer that stopped: any logger may adopt them now."""
        with self._start_lock:
            late = late_journals(self.folder)
            journals = [j for j in self.own if all(j is not other for other in late)]
            self._left += sum(j.pending() for j in journals)
            for journal in [*journals, *(a for a, _ in writer.adopted)]:
                journal.seal()
                journal.release(remove=journal.done())
            for journal in journals:
                self.own.remove(journal)

    def exit_timeout(self) -> float:
        return self._exit_timeout

    # -- figures -------------------------------------------------------------------------------------
    def unwritten(self) -> int:
        """Events of this logger not yet in the database (after close: as it let go of them, and since)."""
        return self._left + sum(j.pending() for j in self.own if not j.map.closed)

    def counts(self) -> dict[str, int]:
        counts = {name: counter.value for name, counter in self._counts.items()}
        counts["not_journaled"] = sum(j.held() for j in list(self.own) if j.path is None and not j.map.closed)
        return counts

    def dropped(self) -> int:
        writer = self.writer or self.last_writer
        dead = writer.stats.dropped_dead_letter if writer is not None else 0
        return dead + sum(self._counts[k].value for k in ("dropped_queue_full", "dropped_spool_full",
                                                          "dropped_recursion"))


os.register_at_fork(after_in_child=_late.clear)  # the parent's, still locked by it
