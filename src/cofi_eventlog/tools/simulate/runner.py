"""Running one shape: start the worker processes together, follow their progress, then ask the
database what arrived."""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...database import Database
from ..progress import Progress
from .counting import Tally, server_status
from .paced import UNLOGGED, Pace, PacedResult, paced_work
from .pipeline import Job, Plan, WorkerResult, work
from .sampler import Sampler, Watched

START_TIMEOUT = 120.0  # seconds for the worker processes to start and meet
ROWS_PER_EVENT = {"legacy": 2, "buffered": 1, UNLOGGED: 0}
# a worker process's target and arguments, given its job, the progress array, the barrier and the results queue
Spawn = Callable[[Job, Any, Any, Any], tuple[Callable[..., None], tuple[Any, ...]]]


@dataclass(frozen=True)
class Target:
    """Where a run writes."""

    dsn: str
    dialect: str
    table: str
    legacy_table: str
    spool_dir: str | None = None


@dataclass
class ShapeResult:
    shape: str
    batch_id: str
    workers: int
    events: int
    rows_expected: int
    rows_found: int
    wall_seconds: float
    caller_seconds: float
    tally: Tally
    server_wide: dict[str, int] | None = None  # MySQL: SHOW GLOBAL STATUS deltas over the run
    flushed: bool = True
    writer: dict[str, Any] = field(default_factory=dict)
    pace: Pace | None = None  # a paced run, with what it measured below
    worker_cpu_seconds: float = 0.0
    steady_cpu_seconds: float = 0.0  # from each worker's second stage on (see paced.PacedResult)
    steady_events: int = 0
    watched: Watched | None = None  # None: nothing written (unlogged)

    @property
    def lost(self) -> int:
        return self.rows_expected - self.rows_found

    @property
    def steady_cpu_us_per_event(self) -> float | None:
        return self.steady_cpu_seconds / self.steady_events * 1e6 if self.steady_events else None

    def paced_json(self) -> dict[str, Any]:
        """The paced run's own figures: statements per event, delay, connections, the workers' CPU."""
        assert self.pace is not None
        out: dict[str, Any] = {
            "file_seconds": self.pace.file_seconds, "jitter": self.pace.jitter,
            "flush_interval": self.pace.flush_interval,
            "statements_per_event": round(self.tally.statements / self.events, 4) if self.events else None,
            **({"transactions_per_event": round(self.tally.transactions / self.events, 4) if self.events else None}
               if self.server_wide is None else {}),
            "worker_cpu_seconds": round(self.worker_cpu_seconds, 4),
            "worker_cpu_us_per_event": round(self.worker_cpu_seconds / self.events * 1e6, 2) if self.events else None,
            "worker_cpu_us_per_event_after_first_stage": round(self.steady_cpu_us_per_event, 2)
            if self.steady_cpu_us_per_event is not None else None,
        }
        w = self.watched
        if w is not None:
            out["delay_seconds"] = w.delay_summary()
            if w.library_connections_max is not None:
                out["connections"] = {"library_at_once_max": w.library_connections_max,
                                      "library_opened": w.library_connections_opened,
                                      "server_threads_above_baseline_max": w.threads_above_baseline_max}
        return out

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "events": self.events,
            "rows_inserted": self.tally.rows,
            "insert_statements": self.tally.statements,
            "wall_seconds": round(self.wall_seconds, 4),
            "caller_seconds": round(self.caller_seconds, 4),
            "lost": self.lost,
            "rows_expected": self.rows_expected,
            "rows_found": self.rows_found,
            "batch_id": self.batch_id,
            "workers": self.workers,
        }
        if self.server_wide is None:
            out["transactions"] = self.tally.transactions
        else:
            out["server_wide"] = self.server_wide
        if self.tally.unread:
            out["connections_not_counted"] = self.tally.unread
        if self.writer:
            out["writer"] = self.writer
            out["flushed"] = self.flushed
        if self.pace is not None:
            out["paced"] = self.paced_json()
        return out


def new_batch_id(shape: str) -> str:
    """Unique per run, so reruns on the same database are told apart (processing_logs allows 64 chars)."""
    return f"sim-{shape}-{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(4).hex()}"


def run_shape(shape: str, target: Target, plan: Plan, workers: int, pace: Pace | None = None,
              shared_writer: bool = True) -> ShapeResult:
    """One shape's run; with a pace, its workers are paced and watched (see sampler.py)."""
    batch_id = new_batch_id(shape)
    jobs = [Job(shape, target.dsn, target.dialect, target.table, target.legacy_table, batch_id, plan, w, workers,
                target.spool_dir, shared_writer) for w in range(workers)]
    watched: Watched | None = None
    with Database(target.dsn) as db:
        before = server_status(db) if target.dialect == "mysql" else None
        bar = Progress(f"{shape:<9}", plan.events(), unit="events")
        if pace is None:
            results = launch(jobs, bar)
        else:
            results, watched = launch_paced(jobs, bar, pace, target)
        after = server_status(db) if target.dialect == "mysql" else None
        found = count_rows(db, target, shape, batch_id) if shape != UNLOGGED else 0
    events = sum(r.events for r in results)
    paced = [r for r in results if isinstance(r, PacedResult)]
    result = ShapeResult(
        shape, batch_id, workers, events,
        rows_expected=events * ROWS_PER_EVENT[shape],
        rows_found=found,
        wall_seconds=max(r.durable for r in results) - min(r.started for r in results),
        caller_seconds=sum(r.caller_seconds for r in results),
        tally=sum((r.tally for r in results), Tally()),
        server_wide={k: after[k] - before[k] for k in before} if before is not None and after is not None else None,
        flushed=all(r.flushed for r in results),
        writer=_summed([r.writer for r in results]),
        pace=pace,
        worker_cpu_seconds=sum(r.cpu_seconds for r in paced),
        steady_cpu_seconds=sum(r.steady_cpu_seconds for r in paced),
        steady_events=sum(r.steady_events for r in paced),
        watched=watched,
    )
    bar.finish(f"{shape}: {events:,} events in {result.wall_seconds:.2f} s, {result.lost:,} lost")
    return result


def launch_paced(jobs: list[Job], bar: Progress, pace: Pace, target: Target) -> tuple[list[WorkerResult],
                                                                                  Watched | None]:
    """Run paced workers, with a sampler watching the table and the server while they run."""
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Array("b", len(jobs), lock=False)
    connections: Any = ctx.Queue()
    sampler = None
    if jobs[0].shape != UNLOGGED:
        sampler = Sampler(target.dsn, target.table, jobs[0].batch_id, [job.gpu_ip for job in jobs], done, connections)
        sampler.start()
    try:
        results = launch(jobs, bar, lambda job, progress, barrier, results: (
            paced_work, (job, pace, progress, done, connections, barrier, results)))
    except BaseException:
        if sampler is not None:
            sampler.abandon()
        raise
    return results, sampler.finish() if sampler is not None else None


def _plain(job: Job, progress: Any, barrier: Any, results: Any) -> tuple[Callable[..., None], tuple[Any, ...]]:
    return work, (job, progress, barrier, results)


def launch(jobs: list[Job], bar: Progress, worker: Spawn = _plain) -> list[WorkerResult]:
    """Run each job in its own process; they begin together, once all have started. ``worker`` gives each
    process's target and arguments."""
    ctx = multiprocessing.get_context("spawn")
    progress = ctx.Array("q", len(jobs), lock=False)
    barrier = ctx.Barrier(len(jobs) + 1)
    results: Any = ctx.Queue()
    procs = []
    for job in jobs:
        target, args = worker(job, progress, barrier, results)
        procs.append(ctx.Process(target=target, args=args, name=f"simulate-{job.shape}-{job.worker}"))
    for proc in procs:
        proc.start()
    collected: list[WorkerResult] = []
    try:
        barrier.wait(START_TIMEOUT)
        while len(collected) < len(procs):
            try:
                collected.append(results.get(timeout=0.1))
            except queue.Empty:
                if all(p.exitcode is not None for p in procs) and results.empty():
                    codes = [p.exitcode for p in procs]
                    raise RuntimeError(f"a simulate worker exited without a result (exit codes {codes})") from None
            bar.update(sum(progress))
    finally:
        for proc in procs:
            proc.join(timeout=5 if len(collected) == len(procs) else 0.1)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    errors = [r.error for r in collected if r.error]
    if errors:
        raise RuntimeError("a simulate worker failed:\n" + errors[0])
    return sorted(collected, key=lambda r: r.worker)


def count_rows(db: Database, target: Target, shape: str, batch_id: str) -> int:
    """Rows of this run's batch id in the tables its shape writes."""
    found = int(db.scalar(f"SELECT COUNT(*) FROM {db.name(target.table)} WHERE batchId = %s", (batch_id,)))
    if shape == "legacy":
        found += int(db.scalar(f"SELECT COUNT(*) FROM {db.name(target.legacy_table)} WHERE batch_id = %s",
                               (batch_id,)))
    return found


def _summed(counters: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for counter in counters:
        for key, value in counter.items():
            if isinstance(value, int):
                out[key] = out.get(key, 0) + value
            elif value is not None:
                out[key] = value
    return out
