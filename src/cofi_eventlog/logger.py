"""EventLogger: the call-site API.

Every event method works on the class, where it goes to the process-wide logger (made on first use
from ``COFI_EVENTLOG_DSN``, else ``sqlite:///cofi_eventlog.db``), and on an instance. In the default
mode a call packs its arguments into a tuple and appends it to the queue: no I/O, no lock, no
normalization on the caller's thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from types import MethodType
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, TypeVar

from .engine import lifecycle
from .engine.diagnostics import Warner, in_diagnostics
from .engine.diagnostics import busy as diagnostics_busy
from .engine.intake import COUNTS, Intake
from .engine.spool import Spool, default_spool_dir, has_segments, spool_key
from .engine.stats import AtomicCounter, WriterStats
from .engine.writer import FlushMarker, Writer
from .events import EventIds, Raw, normalize
from .sinks import is_identifier, open_sink, parse_dsn

DEFAULT_DSN = "sqlite:///cofi_eventlog.db"
DURABILITY = ("memory", "spool")
ON_FULL = ("spill", "block", "drop")

_getpid = os.getpid
_time_ns = time.time_ns
P = ParamSpec("P")
R = TypeVar("R")


class _either(Generic[P, R]):
    """A method that, looked up on the class, is bound to the process-wide logger."""

    def __init__(self, func: Callable[Concatenate[EventLogger, P], R]) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, obj: EventLogger | None, owner: type[EventLogger]) -> Callable[P, R]:
        return MethodType(self.func, obj if obj is not None else owner.default())


class EventLogger:
    """A buffered writer of pipeline events into ``batchExecutionLog``.

    Options (keywords, also for :meth:`configure`):
      dsn            mysql://user:pass@host:3306/db or sqlite:///path
      table          table name, a plain identifier (default batchExecutionLog)
      batch_size     rows per INSERT batch; reaching it wakes the writer (default 1000)
      flush_interval seconds between writes when batches are not full (default 0.5)
      max_queue      events held in memory (default 131072, a whole 10K-file batch)
      strict         raise ValueError/TypeError on bad arguments instead of coercing (default False)
      create_table   create the table if missing (default True)
      durability     'memory' (default) or 'spool': each call is appended to the disk journal first
      on_full        queue full: 'spill' to disk (default), 'block' up to block_timeout, or 'drop'
      block_timeout  seconds a 'block' call may wait before spilling (default 1.0)
      spool_dir      folder for the spool (default per user, see docs/guarantees.md)
      max_spool_bytes spool size cap; events beyond it are dropped and counted (default 1 GiB)
      exit_timeout   seconds the exit hook may spend draining (default 5.0)
      timeout        database connect/read/write timeout in seconds (default 10.0)
      on_connect     called with each new DB-API connection the writer opens (session settings, tracing)
    """

    _default: ClassVar[EventLogger | None] = None
    _default_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, dsn: str | None = None, *, table: str = "batchExecutionLog", batch_size: int = 1000,
                 flush_interval: float = 0.5, max_queue: int = 131072, strict: bool = False,
                 create_table: bool = True, durability: str = "memory", on_full: str = "spill",
                 block_timeout: float = 1.0, spool_dir: str | None = None, max_spool_bytes: int = 1 << 30,
                 exit_timeout: float = 5.0, timeout: float = 10.0,
                 on_connect: Callable[[Any], None] | None = None) -> None:
        if not isinstance(table, str) or not is_identifier(table):
            raise ValueError(f"table must be a plain identifier (letters, digits, _), got {table!r}")
        _positive("batch_size", batch_size, integer=True)
        _positive("max_queue", max_queue, integer=True)
        _positive("flush_interval", flush_interval)
        _positive("timeout", timeout)
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {DURABILITY}, got {durability!r}")
        if on_full not in ON_FULL:
            raise ValueError(f"on_full must be one of {ON_FULL}, got {on_full!r}")
        self._dsn = parse_dsn(dsn or os.environ.get("COFI_EVENTLOG_DSN") or DEFAULT_DSN)
        self._table = table
        self._batch_size = batch_size
        self._flush_interval = float(flush_interval)
        self._max_queue = max_queue
        self._strict = strict
        self._create_table = create_table
        self._durability = durability
        self._on_full = on_full
        self._block_timeout = block_timeout
        self._spool_dir = os.path.join(spool_dir or default_spool_dir(), spool_key(self._dsn.identity(), table))
        self._max_spool_bytes = max_spool_bytes
        self._exit_timeout = exit_timeout
        self._timeout = timeout
        self._on_connect = on_connect
        self._warn = Warner(before=lifecycle.route_all_through_slow_path)
        self._reset_counters()
        self._lock = threading.Lock()
        self._closed = False
        self._fast_pid = -1  # == os.getpid() only while the plain append path may be taken
        self._queue: deque[Any] = deque()
        self._writer: Writer | None = None
        self._intake: Intake | None = None
        self._writer_pid = -1
        self._wake = threading.Event()
        self._start_lock = threading.Lock()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"EventLogger({self._dsn.redacted()!r}, table={self._table!r}, {state})"

    # -- the process-wide logger ---------------------------------------------------------------------
    @classmethod
    def default(cls) -> EventLogger:
        """The process-wide logger, made on first use."""
        logger = cls._default
        if logger is None:
            with cls._default_lock:
                if cls._default is None:
                    cls._default = cls()
                logger = cls._default
        return logger

    @classmethod
    def configure(cls, dsn: str | None = None, **options: Any) -> EventLogger:
        """(Re)build the process-wide logger; the previous one is flushed and closed."""
        new = cls(dsn, **options)
        with cls._default_lock:
            old, cls._default = cls._default, new
        if old is not None:
            old.close()
        return new

    # -- events --------------------------------------------------------------------------------------
    @_either
    def file_error(self, batch_id: str | int, stage: str, file_name: str, error: str | BaseException,
                   gpu_ip: str | None = None, *, payload: Any = None) -> None:
        """A file failed at a stage. ``error`` is text or an exception (its type and traceback are kept)."""
        self._emit(("error", batch_id, stage, file_name, error, gpu_ip, None, None, payload, None,
                    _time_ns(), self._seq.add()))

    @_either
    def file_started(self, batch_id: str | int, stage: str, file_name: str, gpu_ip: str | None = None, *,
                     metadata: dict[str, Any] | None = None) -> None:
        self._emit(("file_start", batch_id, stage, file_name, None, gpu_ip, None, None, None, metadata,
                    _time_ns(), self._seq.add()))

    @_either
    def file_completed(self, batch_id: str | int, stage: str, file_name: str, gpu_ip: str | None = None, *,
                       metadata: dict[str, Any] | None = None) -> None:
        self._emit(("file_complete", batch_id, stage, file_name, None, gpu_ip, None, None, None, metadata,
                    _time_ns(), self._seq.add()))

    @_either
    def progress(self, batch_id: str | int, stage: str, processed: int, total: int, *, gpu_ip: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self._emit(("progress", batch_id, stage, None, None, gpu_ip, processed, total, None, metadata,
                    _time_ns(), self._seq.add()))

    @_either
    def stage_started(self, batch_id: str | int, stage: str, *, gpu_ip: str | None = None,
                      metadata: dict[str, Any] | None = None) -> None:
        self._emit(("stage_start", batch_id, stage, None, None, gpu_ip, None, None, None, metadata,
                    _time_ns(), self._seq.add()))

    @_either
    def stage_completed(self, batch_id: str | int, stage: str, *, gpu_ip: str | None = None,
                        metadata: dict[str, Any] | None = None) -> None:
        self._emit(("stage_complete", batch_id, stage, None, None, gpu_ip, None, None, None, metadata,
                    _time_ns(), self._seq.add()))

    @_either
    def batch_started(self, batch_id: str | int, *, total_files: int | None = None,
                      metadata: dict[str, Any] | None = None) -> None:
        self._emit(("batch_start", batch_id, None, None, None, None, None, total_files, None, metadata,
                    _time_ns(), self._seq.add()))

    @_either
    def batch_completed(self, batch_id: str | int, *, metadata: dict[str, Any] | None = None) -> None:
        self._emit(("batch_complete", batch_id, None, None, None, None, None, None, None, metadata,
                    _time_ns(), self._seq.add()))

    def _emit(self, item: Raw) -> None:
        if self._fast_pid != _getpid():
            return self._emit_slow(item)
        queue = self._queue  # Intake.put, inlined: this is the path every call takes
        if len(queue) >= self._max_queue:
            return self._started().overflow(item)
        queue.append(item)
        if len(queue) >= self._batch_size and not self._wake.is_set():
            self._wake.set()

    def _emit_slow(self, item: Raw) -> None:
        """Strict and spool modes, the first call in a process, calls while one of our warnings is
        being emitted, and calls after close."""
        if in_diagnostics():  # a handler forwarding our own warning back in: refuse, count
            self._dropped_recursion.add()
            return
        if self._closed:
            self._dropped_closed.add()
            self._warn("closed", f"{self!r} is closed; event dropped")
            if self._strict:
                raise RuntimeError("EventLogger is closed")
            return
        intake = self._started()
        if not (self._strict or self._durability == "spool"):
            if not diagnostics_busy():
                self._fast_pid = _getpid()
            return intake.put(item)
        row, notes = normalize(item, intake.writer.ids)
        if notes:
            if self._strict:
                raise notes[0].as_error()
            intake.coerced.add()
        if self._durability == "spool":
            return intake.journal(row)
        return intake.put(row)

    # -- the writer ----------------------------------------------------------------------------------
    def _started(self) -> Intake:
        """The writer for this process, started on the first call (and again in a forked child), and
        the callers' way into its queue."""
        intake = self._intake
        if intake is not None and self._writer_pid == _getpid():
            return intake
        with self._start_lock:
            if self._writer is None or self._writer_pid != _getpid():
                if self._writer is not None:
                    self.after_fork_in_child()
                sink = open_sink(self._dsn, self._table, create_table=self._create_table, timeout=self._timeout,
                                 on_connect=self._on_connect)
                spool = Spool(self._spool_dir, max_bytes=self._max_spool_bytes)
                writer = Writer(self._queue, sink, spool, EventIds(), batch_size=self._batch_size,
                                flush_interval=self._flush_interval, journal=self._durability == "spool",
                                warn=self._warn)
                self._wake = writer.wake
                self._writer_pid = _getpid()
                self._writer = writer
                self._intake = Intake(writer, max_queue=self._max_queue, batch_size=self._batch_size,
                                      on_full=self._on_full, block_timeout=self._block_timeout, warn=self._warn)
                writer.start()
                lifecycle.track(self)
            assert self._intake is not None
            return self._intake

    def after_fork_in_child(self) -> None:
        """Fork: the parent writes its own queued events; the child starts empty, with its own
        connection, spool files, writer thread and counters, made on its first call."""
        old = self._writer
        self._queue = deque()
        self._fast_pid = -1
        self._writer = None
        self._intake = None
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._reset_counters()
        if old is not None:
            old.sink.abandon()
            old.spool.forget_inherited()

    def _reset_counters(self) -> None:
        self._seq = AtomicCounter()  # numbers every accepted call; its value is stats()['enqueued']
        self._dropped_closed = AtomicCounter()
        self._dropped_recursion = AtomicCounter()

    def route_through_slow_path(self) -> None:
        """Until the next slow-path call, every call checks for recursion and fork (see diagnostics)."""
        self._fast_pid = -1

    def exit_timeout(self) -> float:
        return self._exit_timeout

    # -- flush / close / stats -----------------------------------------------------------------------
    @_either
    def flush(self, timeout: float | None = None) -> bool:
        """True once everything enqueued before the call is in the database (or dead-lettered).
        False at the timeout or while the database is away; what is unwritten is then in the spool
        or on its way there (see docs/guarantees.md). With durability='spool' the spool files are
        fsynced first, so not even a power loss after the call loses what was logged before it.

        A logger that has not logged yet still replays a spool an earlier process left behind."""
        writer = self._writer
        if writer is None or self._writer_pid != _getpid():
            if self._closed or not has_segments(self._spool_dir):
                return True
            writer = self._started().writer
        if self._closed:
            return not self._queue and not writer.backlog
        if self._durability == "spool":
            writer.spool.sync()
            if writer.spool.journal_due():
                writer.rotate_journal()
        marker = FlushMarker()
        self._queue.append(marker)
        writer.hurry()
        return marker.done.wait(timeout) and marker.ok

    @_either
    def close(self, timeout: float | None = None) -> None:
        """Stop accepting, drain, release. Past ``timeout`` the rest goes to the spool. Idempotent:
        closing again (the exit hook does) spools any event a racing call appended afterwards."""
        with self._lock:
            closed_before, self._closed = self._closed, True
            self._fast_pid = -1
        writer = self._writer if self._writer_pid == _getpid() else None
        if writer is not None:
            if closed_before:
                writer.spool_stragglers()
            else:
                writer.stop(timeout)
        if type(self)._default is self:
            type(self)._default = None

    def __enter__(self) -> EventLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @_either
    def stats(self) -> dict[str, Any]:
        """Counters since this logger started in this process; the password never appears here."""
        ours = self._writer_pid == _getpid()
        writer = self._writer if ours else None
        w = writer.stats if writer is not None else WriterStats()
        calls = self._intake.counts() if ours and self._intake is not None else dict.fromkeys(COUNTS, 0)
        drops = {
            "dropped_queue_full": calls["dropped_queue_full"],
            "dropped_spool_full": calls["dropped_spool_full"] + w.dropped_spool_full,
            "dropped_closed": self._dropped_closed.value,
            "dropped_recursion": self._dropped_recursion.value,
            "dropped_writer_error": w.dropped_writer_error,
        }
        return {
            "enqueued": self._seq.value,
            "written": w.written,
            "dropped": sum(drops.values()),
            **drops,
            "queue_depth": len(self._queue),
            "flushes": w.flushes,
            "retries": w.retries,
            "last_error": w.last_error,
            "coerced": calls["coerced"] + w.coerced,
            "spilled": calls["spilled"] + w.spilled,
            "replayed": w.replayed,
            "dead_lettered": w.dead_lettered,
            "not_journaled": calls["not_journaled"],
            "spool_bytes": writer.spool.bytes if writer is not None else 0,
            "spool_torn_bytes": w.spool_torn_bytes,
            "flush_seconds_last": w.flush_seconds_last,
            "flush_seconds_avg": w.flush_seconds_avg,
            "flush_seconds_max": w.flush_seconds_max,
            "dsn": self._dsn.redacted(),
            "table": self._table,
        }


def _reset_default_lock() -> None:
    """A forked child must not inherit the lock held by a parent thread that no longer exists."""
    EventLogger._default_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_default_lock)


def _positive(name: str, value: object, *, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
