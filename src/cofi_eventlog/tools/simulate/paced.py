"""Paced workers: each process spends time on every file at every stage, as a GPU worker does, and logs
between, so its events trickle in at a pipeline's rate instead of the full-speed burst of the fast mode.

A worker is one long-running process with one process-wide logger, calling it on the class as pipeline
code does. It measures its own CPU time (every thread of the process: caller and writer) and reports the
server connections its logger opens, so the parent can count those still open.
"""

from __future__ import annotations

import random
import time
import traceback
from dataclasses import dataclass
from typing import Any

from ... import EventLogger
from ...database import Database
from .counting import counter_for
from .legacy import DualLog, ProcessingLogRepo, UnbufferedEventLog
from .pipeline import FLUSH_TIMEOUT, WRITER_COUNTERS, Job, StageLog, WorkerResult, run_stages

JITTER = 0.5  # each file's time at a stage is file_seconds × uniform(1 − JITTER, 1 + JITTER)
UNLOGGED = "unlogged"  # the shape that paces the stages and logs nothing


@dataclass(frozen=True)
class Pace:
    """How a paced run spends its time, and the logger's flush interval (None: the library's default)."""

    file_seconds: float
    flush_interval: float | None = None
    jitter: float = JITTER


@dataclass
class PacedResult(WorkerResult):
    cpu_seconds: float = 0.0  # the whole process, user + system, from the first call until the logger closed
    # the same from the first stage's end on, when the logger's one-time start (its thread, connection and
    # table check) is behind it: the cost a long-running worker pays per event
    steady_cpu_seconds: float = 0.0
    steady_events: int = 0


class Unlogged:
    """The same stages and pace with no logging at all: the floor a logged run's CPU is read against."""

    def file_started(self, batch_id: str, stage: str, file_name: str, gpu_ip: str | None = None) -> None:
        pass

    def file_completed(self, batch_id: str, stage: str, file_name: str, gpu_ip: str | None = None) -> None:
        pass

    def file_error(self, batch_id: str, stage: str, file_name: str, error: str, gpu_ip: str | None = None, *,
                   payload: Any = None) -> None:
        pass


def cpu_seconds() -> float:
    """The process's user + system time, every thread (os.times() with a finer clock than its 10 ms ticks)."""
    return time.process_time()


def run_paced(job: Job, pace: Pace, progress: Any, done: Any, connections: Any) -> PacedResult:
    """One worker's share of the batch at the given pace; ``done[worker]`` is set once its events are
    all in the database (or, unlogged, once it has finished)."""
    rng = random.Random(job.plan.seed * 100_003 + job.worker)
    low, high = pace.file_seconds * (1 - pace.jitter), pace.file_seconds * (1 + pace.jitter)
    first_stage = len(job.files)  # every file reaches the first stage: its last work call ends that stage
    calls = 0
    steady_from: float | None = None

    def work() -> None:
        nonlocal calls, steady_from
        calls += 1
        if calls == first_stage + 1:  # the second stage's first file, its start logged
            steady_from = cpu_seconds()
        time.sleep(rng.uniform(low, high))

    counter = counter_for(job.dialect)

    def on_connect(conn: Any) -> None:
        counter.attach(conn)
        if job.dialect == "mysql":
            connections.put((conn.host, conn.port, conn.thread_id()))

    result = PacedResult(job.worker)
    opened: list[Database] = []
    logger: EventLogger | None = None
    log: StageLog
    if job.shape == "buffered":
        options: dict[str, Any] = {"table": job.table, "on_connect": on_connect, "spool_dir": job.spool_dir}
        if pace.flush_interval is not None:
            options["flush_interval"] = pace.flush_interval
        options["shared_writer"] = job.shared_writer
        logger = EventLogger.configure(job.dsn, **options)
        log = EventLogger
    elif job.shape == "legacy":
        opened = [Database(job.dsn), Database(job.dsn)]
        for db in opened:
            on_connect(db.conn)
        log = DualLog(ProcessingLogRepo(opened[0], job.legacy_table), UnbufferedEventLog(opened[1], job.table))
    else:
        log = Unlogged()
    cpu = cpu_seconds()
    result.started = time.monotonic()
    result.events, result.caller_seconds = run_stages(log, job.plan, job.files, job.batch_id, job.gpu_ip,
                                                      progress, job.worker, work=work)
    if logger is not None:
        result.flushed = logger.flush(FLUSH_TIMEOUT)
    result.durable = time.monotonic()
    done[job.worker] = 1
    counter.before_close()
    if logger is not None:
        logger.close()
        stats = logger.stats()
        result.writer = {key: stats[key] for key in WRITER_COUNTERS if key in stats}
    for db in opened:
        db.close()
    end = cpu_seconds()
    result.cpu_seconds = end - cpu
    if steady_from is not None:
        result.steady_cpu_seconds = end - steady_from
        result.steady_events = result.events - (2 * first_stage + 1)
    result.tally = counter.tally
    return result


def paced_work(job: Job, pace: Pace, progress: Any, done: Any, connections: Any, barrier: Any,
               results: Any) -> None:
    """A paced worker process: wait for the others, run, send back what it measured."""
    try:
        barrier.wait()
        result = run_paced(job, pace, progress, done, connections)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        return
    except Exception:
        result = PacedResult(job.worker, error=traceback.format_exc())
    results.put(result)
