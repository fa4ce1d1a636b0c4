"""EventLogger: the call-site API, a façade over the engine (engine/engine.py).

Every event method works on the class, where it goes to the process-wide logger, and on an instance.
A call packs its arguments into a tuple and hands it to the engine, which copies it into this
process's journal: when the call returns, the event is safe from the death of the process.

The process-wide logger is made on first use from the environment: ``COFI_EVENTLOG_DSN`` (or
``COFI_EVENTLOG_DSN_FILE``, a file holding it) and ``COFI_EVENTLOG_OPTIONS`` (JSON), which
:meth:`EventLogger.configure` sets, so that spawn and forkserver children, which import the package
afresh, log where their parent configured. Without a DSN it is the SQLite file ``cofi_eventlog.db`` in
the working directory, and it says so once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MethodType
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, TypeVar

import orjson

from .engine import lifecycle
from .engine.diagnostics import Warner
from .engine.engine import Engine
from .engine.leadership import writer_key
from .engine.spool import default_spool_dir, secure_folder, spool_key
from .engine.stats import WriterStats
from .sinks import EVENT_TYPES, Dsn, Sink, SinkError, is_identifier, open_sink, parse_dsn
from .sinks.unusable import UnusableSink

DEFAULT_DSN = "sqlite:///cofi_eventlog.db"
ENV_DSN = "COFI_EVENTLOG_DSN"
ENV_DSN_FILE = "COFI_EVENTLOG_DSN_FILE"
ENV_OPTIONS = "COFI_EVENTLOG_OPTIONS"
LOCAL_OPTIONS = ("on_connect", "preflight")  # never travel to child processes
DURABILITY = ("journal", "spool", "memory")  # "memory": the name of the default before journals; same as it
ON_FULL = ("spill", "block", "drop")
JOURNAL_BYTES = 16 << 20  # one journal file's size; a full one is sealed and the next begun
ADOPT_INTERVAL = 5.0  # seconds between looks for journals of processes that are gone

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
      batch_size     rows per INSERT; this many waiting wake the writer (default 1000)
      flush_interval seconds an event may wait for a batch to fill (default 0.5)
      strict         raise ValueError/TypeError on bad arguments instead of coercing (default False)
      create_table   create the table if missing (default True)
      durability     'journal' (default): an event is safe from the death of its process once its call
                     returns; 'spool': flush() also syncs the journal to disk, so a power loss after it
                     loses nothing logged before it. ('memory', the old default's name, means 'journal'.)
      on_full        when max_queue events wait to be written: 'spill' (default) keeps them all in the
                     journal, up to max_spool_bytes; 'block' waits up to block_timeout; 'drop' drops (counted)
      max_queue      see on_full (default 131072, a whole 10K-file batch)
      block_timeout  seconds a 'block' call may wait (default 1.0)
      spool_dir      folder for the journals (default per user, see docs/guarantees.md)
      max_spool_bytes journals and dead letters on disk, at most; events beyond are dropped, counted (1 GiB)
      exit_timeout   seconds the exit hook may spend writing; the rest waits in the journal (default 5.0)
      timeout        database connect/read/write timeout in seconds (default 10.0)
      idle_timeout   seconds after which an unused database connection is given back (default 60.0)
      shared_writer  True (default): the processes of a host logging to the same target share one writer
                     and one connection, held by whichever of them has the spool folder's writer lock
                     (see docs/guarantees.md); False: this process writes its own events itself
      gpu_ip         recorded on events whose call gives no gpu_ip (default None): set it once per process
      preflight      connect and check the table now, raising PreflightError (default False)
      on_connect     called with each new DB-API connection the writer opens (session settings, tracing)
    """

    _default: ClassVar[EventLogger | None] = None
    _default_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, dsn: str | None = None, *, table: str = "batchExecutionLog", batch_size: int = 1000,
                 flush_interval: float = 0.5, max_queue: int = 131072, strict: bool = False,
                 create_table: bool = True, durability: str = "journal", on_full: str = "spill",
                 block_timeout: float = 1.0, spool_dir: str | None = None, max_spool_bytes: int = 1 << 30,
                 exit_timeout: float = 5.0, timeout: float = 10.0, idle_timeout: float = 60.0,
                 gpu_ip: str | None = None, preflight: bool = False,
                 on_connect: Callable[[Any], None] | None = None, shared_writer: bool = True) -> None:
        if not isinstance(table, str) or not is_identifier(table):
            raise ValueError(f"table must be a plain identifier (letters, digits, _), got {table!r}")
        _positive("batch_size", batch_size, integer=True)
        _positive("max_queue", max_queue, integer=True)
        _positive("max_spool_bytes", max_spool_bytes, integer=True)
        _positive("flush_interval", flush_interval)
        _positive("timeout", timeout)
        _positive("idle_timeout", idle_timeout)
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {DURABILITY}, got {durability!r}")
        if on_full not in ON_FULL:
            raise ValueError(f"on_full must be one of {ON_FULL}, got {on_full!r}")
        if gpu_ip is not None and not isinstance(gpu_ip, str):
            raise ValueError(f"gpu_ip must be text, got {type(gpu_ip).__name__}")
        self._dsn: Dsn | None = None
        self._unusable: str | None = None  # why the DSN from the environment cannot be used
        try:
            self._dsn = _resolved(parse_dsn(dsn or _dsn_from_environment() or DEFAULT_DSN))
        except ValueError as exc:
            if dsn is not None or strict:
                raise
            self._unusable = f"{ENV_DSN} is not a usable DSN ({exc})"
        self._gpu_ip = gpu_ip
        self._table = table
        self._batch_size = batch_size
        self._create_table = create_table
        self._timeout = timeout
        self._on_connect = on_connect
        self._exit_timeout = exit_timeout
        self._spool_dir = os.path.join(os.path.abspath(spool_dir or default_spool_dir()), spool_key(
            _spool_target(self._dsn) if self._dsn is not None else "unusable-dsn", table))
        self._warn = Warner()
        self._engine = Engine(self._spool_dir, self._open_sink, target=self._identity(), table=table,
                              batch_size=batch_size, flush_interval=float(flush_interval), max_queue=max_queue,
                              on_full=on_full, block_timeout=block_timeout, strict=strict,
                              sync=durability == "spool", max_spool_bytes=max_spool_bytes,
                              journal_bytes=JOURNAL_BYTES, adopt_interval=ADOPT_INTERVAL,
                              idle_timeout=float(idle_timeout), exit_timeout=exit_timeout, warn=self._warn,
                              shared_writer=writer_key(f"{self._identity()}\0{table}")
                              if shared_writer and self._dsn is not None else None)
        self._emit = self._engine.admit
        self._seq = self._engine.seq.add
        if self._unusable is not None:
            self._warn("dsn", f"{self._unusable}: events wait in {self._spool_dir} until a process with a valid "
                              f"DSN writes them (cofi-eventlog spool replay)")
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
        state = "closed" if self._engine.closed else "open"
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

    def _identity(self) -> str:
        return self._dsn.identity() if self._dsn is not None else self._where()

    def exit_timeout(self) -> float:
        return self._exit_timeout

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
        if not _dsn_from_environment() and logger._dsn is not None:
            logger._warn("default", f"no database configured ({ENV_DSN} is unset and EventLogger.configure() "
                                    f"was not called in this process): events go to {logger._dsn.path}")
        return logger

    @classmethod
    def configure(cls, dsn: str | None = None, **options: Any) -> EventLogger:
        """(Re)build the process-wide logger; the previous one is flushed and closed.

        The DSN and the options (all but ``on_connect`` and ``preflight``, which stay in this process)
        are also put in the environment, so that child processes — spawn and forkserver ones included,
        and Pool workers — log to the same place. A DSN with a password travels as a reference: it is
        written to a file only this user can read, and ``COFI_EVENTLOG_DSN_FILE`` names it, so that no
        child (ffmpeg, a shell tool) sees the password in its environment. A relative SQLite path travels
        made absolute. A bad DSN or option raises here, at start-up."""
        new = cls(dsn, **options)
        if dsn is not None:
            _export_dsn(dsn, new._dsn)
        travelling = {k: v for k, v in options.items() if k not in LOCAL_OPTIONS}
        if travelling.get("spool_dir") is not None:
            travelling["spool_dir"] = os.path.abspath(travelling["spool_dir"])
        os.environ[ENV_OPTIONS] = orjson.dumps(travelling).decode()
        with cls._default_lock:
            old, cls._default = cls._default, new
        if old is not None:
            old.close()
        lifecycle.track(new._engine)  # closed at exit even if it never logs: it writes what dead workers left
        return new

    # -- events --------------------------------------------------------------------------------------
    @_either
    def file_error(self, batch_id: str | int, stage: str, file_name: str, error: str | BaseException,
                   gpu_ip: str | None = None, *, payload: Any = None) -> None:
        """A file failed at a stage. ``error`` is text or an exception (its type and traceback are kept)."""
        self._emit(("error", batch_id, stage, file_name, error, self._gpu_ip if gpu_ip is None else gpu_ip,
                    None, None, payload, None, _time_ns(), self._seq()))

    @_either
    def file_started(self, batch_id: str | int, stage: str, file_name: str, gpu_ip: str | None = None, *,
                     metadata: dict[str, Any] | None = None) -> None:
        self._emit(("file_start", batch_id, stage, file_name, None, self._gpu_ip if gpu_ip is None else gpu_ip,
                    None, None, None, metadata, _time_ns(), self._seq()))

    @_either
    def file_completed(self, batch_id: str | int, stage: str, file_name: str, gpu_ip: str | None = None, *,
                       metadata: dict[str, Any] | None = None) -> None:
        self._emit(("file_complete", batch_id, stage, file_name, None, self._gpu_ip if gpu_ip is None else gpu_ip,
                    None, None, None, metadata, _time_ns(), self._seq()))

    @_either
    def progress(self, batch_id: str | int, stage: str, processed: int, total: int, *, gpu_ip: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self._emit(("progress", batch_id, stage, None, None, self._gpu_ip if gpu_ip is None else gpu_ip,
                    processed, total, None, metadata, _time_ns(), self._seq()))

    @_either
    def stage_started(self, batch_id: str | int, stage: str, *, gpu_ip: str | None = None,
                      metadata: dict[str, Any] | None = None) -> None:
        self._emit(("stage_start", batch_id, stage, None, None, self._gpu_ip if gpu_ip is None else gpu_ip,
                    None, None, None, metadata, _time_ns(), self._seq()))

    @_either
    def stage_completed(self, batch_id: str | int, stage: str, *, gpu_ip: str | None = None,
                        metadata: dict[str, Any] | None = None) -> None:
        self._emit(("stage_complete", batch_id, stage, None, None, self._gpu_ip if gpu_ip is None else gpu_ip,
                    None, None, None, metadata, _time_ns(), self._seq()))

    @_either
    def batch_started(self, batch_id: str | int, *, total_files: int | None = None,
                      stages: Sequence[str] | None = None, metadata: dict[str, Any] | None = None) -> None:
        """``stages``: the stages the batch will run, in order, so that progress is over all of them (the
        dashboard shows those not started as waiting). Stored as ``metadata["stages"]``."""
        if stages is not None:
            declared = {"stages": list(stages)}
            if metadata is None:
                metadata = declared
            elif isinstance(metadata, dict):
                metadata = {**metadata, **declared}
        self._emit(("batch_start", batch_id, None, None, None, None, None, total_files, None, metadata,
                    _time_ns(), self._seq()))

    @_either
    def batch_completed(self, batch_id: str | int, *, metadata: dict[str, Any] | None = None) -> None:
        self._emit(("batch_complete", batch_id, None, None, None, None, None, None, None, metadata,
                    _time_ns(), self._seq()))

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
                    processed, total, payload, metadata, _time_ns(), self._seq()))

    # -- the engine ----------------------------------------------------------------------------------
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

    # -- flush / close / stats -----------------------------------------------------------------------
    @_either
    def flush(self, timeout: float | None = None) -> bool:
        """True once everything logged before the call is in the database (or dead-lettered), together with
        every journal of a process that is gone found meanwhile, and no event was dropped since the
        previous flush was answered. It waits through outages, retries and failover; False at the
        timeout (what is unwritten stays in the journal) or after a drop (see stats()). With
        durability='spool' the journal is synced to disk first, so not even a power loss loses it."""
        return self._engine.flush(timeout)

    @_either
    def close(self, timeout: float | None = None) -> None:
        """Write what there is within ``timeout``, adopt what journals of dead processes there are, and
        stop the writer. What is left stays in the journal for the next logger of this target, and a
        warning says how many and where. Calls after close still go to a journal (they are written by
        the next process). Idempotent. On the class, the process-wide logger stays the closed one, so that
        ``EventLogger.stats()`` gives its final figures, until the next configure()."""
        self._engine.close(timeout)

    def __enter__(self) -> EventLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @_either
    def stats(self) -> dict[str, Any]:
        """Counters since this logger started in this process (after close: its final ones); the password
        never appears here."""
        engine = self._engine
        writer = engine.writer or engine.last_writer
        w = writer.stats if writer is not None else WriterStats()
        calls = engine.counts()
        drops = {
            "dropped_queue_full": calls["dropped_queue_full"],
            "dropped_spool_full": calls["dropped_spool_full"],
            "dropped_recursion": calls["dropped_recursion"],
            "dropped_dead_letter": w.dropped_dead_letter,
        }
        unwritten = engine.unwritten()
        return {
            "enqueued": engine.appended + sum(drops.values()) - w.dropped_dead_letter,
            "written": w.written - w.for_others,
            "dropped": sum(drops.values()),
            **drops,
            "unwritten": unwritten,
            "queue_depth": unwritten,
            "flushes": w.flushes,
            "retries": w.retries,
            "last_error": w.last_error,
            "coerced": calls["coerced"] + w.coerced,
            "adopted": w.adopted,
            "writer_role": writer.role if writer is not None else "not started",
            "written_for_others": w.for_others,
            "took_over": w.took_over,
            "too_many_connections": w.too_many_connections,
            "dead_lettered": w.dead_lettered,
            "not_journaled": calls["not_journaled"],
            "spool_bytes": engine.spool.measure() if engine.spool is not None else 0,
            "flush_seconds_last": w.flush_seconds_last,
            "flush_seconds_avg": w.flush_seconds_avg,
            "flush_seconds_max": w.flush_seconds_max,
            "dsn": self._where(),
            "table": self._table,
            "spool_folder": self._spool_dir,
        }


def _resolved(dsn: Dsn) -> Dsn:
    """A relative SQLite path means the working directory of the moment the logger is made."""
    if dsn.dialect == "sqlite":
        return dataclasses.replace(dsn, path=os.path.abspath(dsn.path))
    return dsn


def _dsn_from_environment() -> str | None:
    """COFI_EVENTLOG_DSN, else the first line of the file COFI_EVENTLOG_DSN_FILE names."""
    dsn = os.environ.get(ENV_DSN)
    if dsn:
        return dsn
    path = os.environ.get(ENV_DSN_FILE)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().strip() or None
    except OSError as exc:
        raise ValueError(f"{ENV_DSN_FILE} names a file that cannot be read ({exc.strerror})") from None


def _export_dsn(dsn: str, parsed: Dsn | None) -> None:
    """Put the DSN where child processes find it, never a password in the environment (see configure)."""
    if parsed is not None and parsed.dialect == "sqlite":
        dsn = f"sqlite:///{parsed.path}"  # absolute: a child started in another folder logs to the same file
    if parsed is None or not parsed.password:
        os.environ[ENV_DSN] = dsn
        os.environ.pop(ENV_DSN_FILE, None)
        return
    folder = Path(default_spool_dir()).parent / "dsn"
    problem, _ = secure_folder(folder)
    if problem is not None:
        raise ValueError(f"cannot keep the DSN for child processes: {problem}")
    path = folder / f"{hashlib.sha256(dsn.encode()).hexdigest()[:16]}.dsn"
    staging = path.with_suffix(f".{os.getpid()}.new")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, dsn.encode() + b"\n")
    finally:
        os.close(fd)
    os.rename(staging, path)
    os.environ.pop(ENV_DSN, None)
    os.environ[ENV_DSN_FILE] = str(path)


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
