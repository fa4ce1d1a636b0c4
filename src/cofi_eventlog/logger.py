"""EventLogger: the call-site API.

Every event method works on the class, where it goes to the process-wide logger, and on an instance.
In the default mode a call packs its arguments into a tuple and appends it to the queue: no I/O, no
lock, no normalization on the caller's thread.

The process-wide logger is made on first use from the environment: ``COFI_EVENTLOG_DSN`` and
``COFI_EVENTLOG_OPTIONS`` (JSON), which :meth:`EventLogger.configure` sets, so that spawn and
forkserver children, which import the package afresh, log where their parent configured. Without a
DSN it is the SQLite file ``cofi_eventlog.db`` in the working directory, and it says so once.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import MethodType
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, TypeVar

import orjson

from .engine import lifecycle
from .engine.diagnostics import Warner, in_diagnostics
from .engine.diagnostics import busy as diagnostics_busy
from .engine.intake import COUNTS, Intake
from .engine.spool import Spool, default_spool_dir, has_segments, secure_folder, spool_key
from .engine.stats import AtomicCounter, WriterStats
from .engine.writer import FlushMarker, Writer
from .events import EventIds, Raw, normalize
from .sinks import EVENT_TYPES, Dsn, Sink, SinkError, is_identifier, open_sink, parse_dsn
from .sinks.unusable import UnusableSink

DEFAULT_DSN = "sqlite:///cofi_eventlog.db"
ENV_DSN = "COFI_EVENTLOG_DSN"
ENV_OPTIONS = "COFI_EVENTLOG_OPTIONS"
LOCAL_OPTIONS = ("on_connect", "preflight")  # never travel to child processes
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

    def __set_name__(self, owner: type[EventLogger], name: str) -> None:
        self.name = name

    def __get__(self, obj: EventLogger | None, owner: type[EventLogger]) -> Callable[P, R]:
        if obj is None:  # the process-wide logger's own bound method (see EventLogger._bind)
            bound: Callable[P, R] = (owner._default or owner.default()).__dict__[self.name]
            return bound
        return MethodType(self.func, obj)


class PreflightError(RuntimeError):
    """The logger cannot write where it is configured to (see :meth:`EventLogger.preflight`)."""


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
      gpu_ip         recorded on events whose call gives no gpu_ip (default None): set it once per process
      preflight      connect and check the table now, raising PreflightError (default False)
      on_connect     called with each new DB-API connection the writer opens (session settings, tracing)
    """

    _default: ClassVar[EventLogger | None] = None
    _default_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, dsn: str | None = None, *, table: str = "batchExecutionLog", batch_size: int = 1000,
                 flush_interval: float = 0.5, max_queue: int = 131072, strict: bool = False,
                 create_table: bool = True, durability: str = "memory", on_full: str = "spill",
                 block_timeout: float = 1.0, spool_dir: str | None = None, max_spool_bytes: int = 1 << 30,
                 exit_timeout: float = 5.0, timeout: float = 10.0, gpu_ip: str | None = None,
                 preflight: bool = False, on_connect: Callable[[Any], None] | None = None) -> None:
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
        if gpu_ip is not None and not isinstance(gpu_ip, str):
            raise ValueError(f"gpu_ip must be text, got {type(gpu_ip).__name__}")
        self._dsn: Dsn | None = None
        self._unusable: str | None = None  # why the DSN from the environment cannot be used
        try:
            self._dsn = _resolved(parse_dsn(dsn or os.environ.get(ENV_DSN) or DEFAULT_DSN))
        except ValueError as exc:
            if dsn is not None or strict:
                raise
            self._unusable = f"{ENV_DSN} is not a usable DSN ({exc})"
        self._gpu_ip = gpu_ip
        self._table = table
        self._batch_size = batch_size
        self._flush_interval = float(flush_interval)
        self._max_queue = max_queue
        self._strict = strict
        self._create_table = create_table
        self._durability = durability
        self._on_full = on_full
        self._block_timeout = block_timeout
        self._spool_dir = os.path.join(os.path.abspath(spool_dir or default_spool_dir()), spool_key(
            _spool_target(self._dsn) if self._dsn is not None else "unusable-dsn", table))
        self._max_spool_bytes = max_spool_bytes
        self._exit_timeout = exit_timeout
        self._timeout = timeout
        self._on_connect = on_connect
        self._warn = Warner(before=lifecycle.route_all_through_slow_path)
        self._reset_counters()
        self._lock = threading.RLock()  # RLock: a SIGTERM handler may close() on a thread inside close()
        self._closed = False
        self._fast = False  # whether calls may take the plain append path (no fork or recursion to check)
        self._queue: deque[Any] = deque()
        self._writer: Writer | None = None
        self._intake: Intake | None = None
        self._writer_pid = -1
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        if self._unusable is not None:
            self._warn("dsn", f"{self._unusable}: events are spooled to {self._spool_dir} until a "
                              f"process with a valid DSN replays them (cofi-eventlog spool replay)")
        self._bind()
        if preflight:
            self.preflight()

    def _bind(self) -> None:
        """Bind every method that also works on the class once, into this instance's own __dict__: a
        call on the instance finds it there before the descriptor, and a class-level call gets it from
        there too, instead of making a new bound method each time."""
        for klass in reversed(type(self).__mro__):
            for name, attr in vars(klass).items():
                if isinstance(attr, _either):
                    self.__dict__[name] = MethodType(attr.func, self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"EventLogger({self._where()!r}, table={self._table!r}, {state})"

    @property
    def spool_folder(self) -> str:
        """The folder this logger spools to: one per target database (or SQLite file) and table."""
        return self._spool_dir

    @property
    def table(self) -> str:
        return self._table

    def _where(self) -> str:
        return self._dsn.redacted() if self._dsn is not None else f"<unusable {ENV_DSN}>"

    # -- the process-wide logger ---------------------------------------------------------------------
    @classmethod
    def default(cls) -> EventLogger:
        """The process-wide logger, made on first use from the environment."""
        logger = cls._default
        if logger is None:
            with cls._default_lock:
                if cls._default is None:
                    cls._default = cls._from_environment()
                logger = cls._default
        return logger

    @classmethod
    def _from_environment(cls) -> EventLogger:
        """Never raises for a bad environment (a broken option is ignored and warned about, a broken
        DSN spools), so that a class-level call cannot hide the pipeline's own error."""
        options: dict[str, Any] = {}
        problem = None
        try:
            options = orjson.loads(os.environ.get(ENV_OPTIONS) or "{}")
            logger = cls(**options)
        except (ValueError, TypeError) as exc:
            if options.get("strict") is True:
                raise
            problem = f"{ENV_OPTIONS} ignored: {exc}"
            logger = cls()
        if problem:
            logger._warn("options", problem)
        if not os.environ.get(ENV_DSN):
            assert logger._dsn is not None
            logger._warn("default", f"no database configured ({ENV_DSN} is unset and EventLogger.configure() "
                                    f"was not called in this process): events go to {logger._dsn.path}")
        return logger

    @classmethod
    def configure(cls, dsn: str | None = None, **options: Any) -> EventLogger:
        """(Re)build the process-wide logger; the previous one is flushed and closed.

        The DSN and the options (all but ``on_connect`` and ``preflight``, which stay in this process)
        are also put in the environment, so that child processes — spawn and forkserver ones included,
        and Pool workers — log to the same place. A bad DSN or option raises here, at start-up."""
        new = cls(dsn, **options)
        if dsn is not None:
            os.environ[ENV_DSN] = dsn
        travelling = {k: v for k, v in options.items() if k not in LOCAL_OPTIONS}
        if travelling.get("spool_dir") is not None:
            travelling["spool_dir"] = os.path.abspath(travelling["spool_dir"])
        os.environ[ENV_OPTIONS] = orjson.dumps(travelling).decode()
        with cls._default_lock:
            old, cls._default = cls._default, new
        if old is not None:
            old.close()
        lifecycle.install_sigterm_handler()
        return new

    # -- events --------------------------------------------------------------------------------------
    @_either
    def file_error(self, batch_id: str | int, stage: str, file_name: str, error: str | BaseException,
                   gpu_ip: str | None = None, *, payload: Any = None) -> None:
        """A file failed at a stage. ``error`` is text or an exception (its type and traceback are kept)."""
        self._emit(("error", batch_id, stage, file_name, error, self._gpu_ip if gpu_ip is None else gpu_ip,
                    None, None, payload, None, _time_ns(), self._seq.add()))

    @_either
    def file_started(self, batch_id: str | int, stage: str, file_name: str, gpu_ip: str | None = None, *,
                     metadata: dict[str, Any] | None = None) -> None:
        self._emit(("file_start", batch_id, stage, file_name, None, self._gpu_ip if gpu_ip is None else gpu_ip,
                    None, None, None, metadata, _time_ns(), self._seq.add()))

    @_either
    def file_completed(self, batch_id: str | int, stage: str, file_name: str, gpu_ip: str | None = None, *,
                       metadata: dict[str, Any] | None = None) -> None:
        self._emit(("file_complete", batch_id, stage, file_name, None, self._gpu_ip if gpu_ip is None else gpu_ip,
                    None, None, None, metadata, _time_ns(), self._seq.add()))

    @_either
    def progress(self, batch_id: str | int, stage: str, processed: int, total: int, *, gpu_ip: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self._emit(("progress", batch_id, stage, None, None, self._gpu_ip if gpu_ip is None else gpu_ip,
                    processed, total, None, metadata, _time_ns(), self._seq.add()))

    @_either
    def stage_started(self, batch_id: str | int, stage: str, *, gpu_ip: str | None = None,
                      metadata: dict[str, Any] | None = None) -> None:
        self._emit(("stage_start", batch_id, stage, None, None, self._gpu_ip if gpu_ip is None else gpu_ip,
                    None, None, None, metadata, _time_ns(), self._seq.add()))

    @_either
    def stage_completed(self, batch_id: str | int, stage: str, *, gpu_ip: str | None = None,
                        metadata: dict[str, Any] | None = None) -> None:
        self._emit(("stage_complete", batch_id, stage, None, None, self._gpu_ip if gpu_ip is None else gpu_ip,
                    None, None, None, metadata, _time_ns(), self._seq.add()))

    @_either
    def batch_started(self, batch_id: str | int, *, total_files: int | None = None,
                      metadata: dict[str, Any] | None = None) -> None:
        self._emit(("batch_start", batch_id, None, None, None, None, None, total_files, None, metadata,
                    _time_ns(), self._seq.add()))

    @_either
    def batch_completed(self, batch_id: str | int, *, metadata: dict[str, Any] | None = None) -> None:
        self._emit(("batch_complete", batch_id, None, None, None, None, None, None, None, metadata,
                    _time_ns(), self._seq.add()))

    @_either
    def event(self, event_type: str, batch_id: str | int, stage: str | None = None, file_name: str | None = None,
              *, message: str | BaseException | None = None, gpu_ip: str | None = None,
              processed: int | None = None, total: int | None = None, payload: Any = None,
              metadata: dict[str, Any] | None = None) -> None:
        """Any event, every column given by name: the form for code that forwards events (EventLogHandler).
        An unknown ``event_type`` raises ValueError: it is a misspelt method, not bad data."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"event_type must be one of {EVENT_TYPES}, got {event_type!r}")
        self._emit((event_type, batch_id, stage, file_name, message, self._gpu_ip if gpu_ip is None else gpu_ip,
                    processed, total, payload, metadata, _time_ns(), self._seq.add()))

    def _emit(self, item: Raw) -> None:
        if not self._fast:
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
            if self._strict:
                raise RuntimeError("EventLogger is closed")
            intake = self._intake if self._writer_pid == _getpid() else None
            if intake is not None:  # spooled for the next logger (a call racing with SIGTERM's close, say)
                intake.spill(item, f"{self!r} is closed")
                return intake.writer.spool.close()  # let go at once, so that the next logger can replay it
            self._dropped_closed.add()
            self._warn("closed", f"{self!r} is closed and never wrote in this process; event dropped")
            return
        intake = self._started()
        if not (self._strict or self._durability == "spool"):
            if not diagnostics_busy():
                self._fast = True
            return intake.put(item)
        row, notes = normalize(item, intake.writer.ids)
        if notes and self._strict:
            raise notes[0].as_error()
        if self._durability == "spool":
            return intake.journal(item, row, coerced=bool(notes))
        if notes:
            intake.coerced.add()
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
                spool = Spool(self._spool_dir, max_bytes=self._max_spool_bytes, warn=self._warn)
                spool.record_target(self._dsn.identity() if self._dsn else self._where(), self._table)
                writer = Writer(self._queue, self._open_sink(), spool, EventIds(), batch_size=self._batch_size,
                                flush_interval=self._flush_interval, journal=self._durability == "spool",
                                warn=self._warn, dropped=self._dropped_total)
                self._wake = writer.wake
                self._writer_pid = _getpid()
                self._writer = writer
                self._intake = Intake(writer, max_queue=self._max_queue, batch_size=self._batch_size,
                                      on_full=self._on_full, block_timeout=self._block_timeout, warn=self._warn)
                writer.start()
                lifecycle.track(self)
            assert self._intake is not None
            return self._intake

    def _open_sink(self) -> Sink:
        if self._dsn is None:
            return UnusableSink(self._unusable or "no DSN")
        return open_sink(self._dsn, self._table, create_table=self._create_table, timeout=self._timeout,
                         on_connect=self._on_connect, rows_per_statement=self._batch_size)

    @_either
    def preflight(self) -> None:
        """Check now, at start-up, what the first write would otherwise find out: the DSN, the
        credentials, the table (made if missing and ``create_table``), the right to insert into it, and
        the spool folder. Raises PreflightError saying what is wrong; sends no event."""
        problem, _ = secure_folder(Path(self._spool_dir))
        if problem is not None:
            raise PreflightError(problem)
        sink = self._open_sink()
        try:
            sink.check()
        except SinkError as exc:
            raise PreflightError(f"cannot log to {self._where()}, table {self._table}: {exc}") from None
        finally:
            sink.close()

    def after_fork_in_child(self) -> None:
        """Fork: the parent writes its own queued events; the child starts empty, with its own
        connection, spool files, writer thread and counters, made on its first call."""
        old = self._writer
        self._queue = deque()
        self._fast = False
        self._writer = None
        self._intake = None
        self._lock = threading.RLock()
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
        self._fast = False

    def exit_timeout(self) -> float:
        return self._exit_timeout

    def _dropped_total(self) -> int:
        """Every event this logger lost in this process (the writer asks, to answer flush())."""
        return int(self.stats()["dropped"])

    # -- flush / close / stats -----------------------------------------------------------------------
    @_either
    def flush(self, timeout: float | None = None) -> bool:
        """True once everything enqueued before the call is in the database (or dead-lettered), and no
        event was dropped since the previous flush was answered. False at the timeout, while the
        database is away (what is unwritten is then in the spool or on its way there), or after a drop
        (see stats() and docs/guarantees.md). With durability='spool' the spool files are
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
        closing again (the exit hook does) waits for the same drain, and spools any event a racing call
        appended afterwards."""
        with self._lock:
            self._closed = True
            self._fast = False
        writer = self._writer if self._writer_pid == _getpid() else None
        if writer is not None:
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
            "dropped_dead_letter": w.dropped_dead_letter,
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
            "dsn": self._where(),
            "table": self._table,
        }


def _resolved(dsn: Dsn) -> Dsn:
    """A relative SQLite path means the working directory of the moment the logger is made."""
    if dsn.dialect == "sqlite":
        return dataclasses.replace(dsn, path=os.path.abspath(dsn.path))
    return dsn


def _spool_target(dsn: Dsn) -> str:
    """What names a spool folder: where rows go (the database, or the SQLite file), never who logs in
    nor which host answers, so that a backlog is found again after a password change or a move to
    another node or host."""
    return f"sqlite:{dsn.path}" if dsn.dialect == "sqlite" else f"mysql:{dsn.database}"


def _reset_default_lock() -> None:
    """A forked child must not inherit the lock held by a parent thread that no longer exists."""
    EventLogger._default_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_default_lock)


def _positive(name: str, value: object, *, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
