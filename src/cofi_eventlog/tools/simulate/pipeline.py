"""The simulated batch: five stages over the files, each file logging a start and a completion (or an
error), run by worker processes in either shape."""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ... import EventLogger
from ...database import Database
from .counting import Tally, counter_for
from .legacy import DualLog, ProcessingLogRepo, UnbufferedEventLog

STAGES = ("lid", "llm1", "llm2", "audit", "metadata")
SHAPES = ("legacy", "buffered")
PROGRESS_EVERY = 256  # events between progress updates
FLUSH_TIMEOUT = 600.0
WRITER_COUNTERS = ("written", "flushes", "dropped", "unwritten", "retries", "dead_lettered", "last_error")


class StageLog(Protocol):
    """The three calls a stage makes; EventLogger (the class or an instance) and DualLog both fit."""

    def file_started(self, batch_id: str, stage: str, file_name: str, gpu_ip: str | None = None) -> None: ...

    def file_completed(self, batch_id: str, stage: str, file_name: str, gpu_ip: str | None = None) -> None: ...

    def file_error(self, batch_id: str, stage: str, file_name: str, error: str, gpu_ip: str | None = None, *,
                   payload: Any = None) -> None: ...


@dataclass(frozen=True)
class Plan:
    """Which files fail, and where. A failed file leaves the batch, as it does in the pipeline."""

    files: int
    failure_rate: float
    seed: int = 1
    failures: dict[int, int] = field(default_factory=dict)  # file index → index of the stage it fails at

    @classmethod
    def make(cls, files: int, failure_rate: float, seed: int = 1) -> Plan:
        rng = random.Random(seed)
        failing = rng.sample(range(files), round(files * failure_rate))
        return cls(files, failure_rate, seed, {i: rng.randrange(len(STAGES)) for i in failing})

    def events(self) -> int:
        """File events in the whole batch: two per file and stage it reaches."""
        lost_stages = sum(len(STAGES) - 1 - stage for stage in self.failures.values())
        return 2 * (self.files * len(STAGES) - lost_stages)


def file_name(index: int) -> str:
    return f"call-{index:06d}.wav"


def error_text(stage: str) -> str:
    return f"TimeoutError: {stage} model did not answer within 30 s"


def run_stages(log: StageLog, plan: Plan, files: Sequence[int], batch_id: str, gpu_ip: str,
               progress: Any = None, slot: int = 0, work: Callable[[], None] | None = None) -> tuple[int, float]:
    """Drive the batch through the stages; returns (events logged, seconds spent inside log calls).
    ``work`` stands for the stage's own work on a file, between its start and its outcome."""
    clock = time.perf_counter
    failures = plan.failures
    events = 0
    spent = 0.0
    for index, stage in enumerate(STAGES):
        for i in files:
            fails_at = failures.get(i)
            if fails_at is not None and fails_at < index:
                continue
            name = file_name(i)
            t0 = clock()
            log.file_started(batch_id, stage, name, gpu_ip)
            t1 = clock()
            if work is not None:
                work()
            if fails_at == index:
                payload = {"call_id": name, "stage": stage, "attempt": 1, "gpu_ip": gpu_ip}
                error = error_text(stage)
                t2 = clock()
                log.file_error(batch_id, stage, name, error, gpu_ip, payload=payload)
            else:
                t2 = clock()
                log.file_completed(batch_id, stage, name, gpu_ip)
            spent += (t1 - t0) + (clock() - t2)
            events += 2
            if progress is not None and (work is not None or events % PROGRESS_EVERY == 0):
                progress[slot] = events
    if progress is not None:
        progress[slot] = events
    return events, spent


@dataclass(frozen=True)
class Job:
    """One worker's share of one shape's run."""

    shape: str
    dsn: str
    dialect: str
    table: str
    legacy_table: str
    batch_id: str
    plan: Plan
    worker: int
    workers: int
    spool_dir: str | None = None  # None: the library's per-user default
    shared_writer: bool = True  # the library's default, one writer for the host; False: one per worker process

    @property
    def files(self) -> range:
        return range(self.worker, self.plan.files, self.workers)

    @property
    def gpu_ip(self) -> str:
        return f"10.0.0.{10 + self.worker}"


@dataclass
class WorkerResult:
    worker: int
    events: int = 0
    caller_seconds: float = 0.0
    started: float = 0.0  # time.monotonic(), comparable across processes on one machine
    durable: float = 0.0  # when the last event was in the database
    tally: Tally = field(default_factory=Tally)
    flushed: bool = True  # buffered: flush() confirmed every event written
    writer: dict[str, Any] = field(default_factory=dict)  # buffered: the logger's own counters
    error: str | None = None


def run_legacy(job: Job, progress: Any) -> WorkerResult:
    counter = counter_for(job.dialect)
    result = WorkerResult(job.worker, started=time.monotonic())
    with Database(job.dsn) as repo_db, Database(job.dsn) as events_db:
        counter.attach(repo_db.conn)
        counter.attach(events_db.conn)
        log = DualLog(ProcessingLogRepo(repo_db, job.legacy_table), UnbufferedEventLog(events_db, job.table))
        result.events, result.caller_seconds = run_stages(log, job.plan, job.files, job.batch_id, job.gpu_ip,
                                                          progress, job.worker)
        result.durable = time.monotonic()
        counter.before_close()
    result.tally = counter.tally
    return result


def run_buffered(job: Job, progress: Any) -> WorkerResult:
    """Pipeline code's call shape: methods called on the class, going to the process-wide logger."""
    counter = counter_for(job.dialect)
    logger = EventLogger.configure(job.dsn, table=job.table, on_connect=counter.attach,
                                   spool_dir=job.spool_dir, shared_writer=job.shared_writer)
    result = WorkerResult(job.worker, started=time.monotonic())
    if job.worker == 0:  # the batch declares its stages, as a pipeline's orchestrator does: one event more
        EventLogger.batch_started(job.batch_id, total_files=job.plan.files, stages=STAGES)
    result.events, result.caller_seconds = run_stages(EventLogger, job.plan, job.files, job.batch_id,
                                                      job.gpu_ip, progress, job.worker)
    result.events += int(job.worker == 0)
    result.flushed = logger.flush(FLUSH_TIMEOUT)
    result.durable = time.monotonic()
    counter.before_close()
    logger.close()
    stats = logger.stats()
    result.writer = {key: stats[key] for key in WRITER_COUNTERS if key in stats}
    result.tally = counter.tally
    return result


def work(job: Job, progress: Any, barrier: Any, results: Any) -> None:
    """A worker process: wait for the others, run the job, send back what it measured."""
    try:
        barrier.wait()
        result = run_legacy(job, progress) if job.shape == "legacy" else run_buffered(job, progress)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        return
    except Exception:
        result = WorkerResult(job.worker, error=traceback.format_exc())
    results.put(result)
