"""fork and multiprocessing: children start fresh, workers that never call close() still land every
event, and many threads in many processes share one table with exact counts."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest
from conftest import landed

from cofi_eventlog import EventLogger

pytestmark = pytest.mark.mysql

QUIET = {"batch_size": 1_000_000, "flush_interval": 3600.0}  # written only by flush, close or the exit hook


def log_from_threads(log: EventLogger, tag: str, threads: int, each: int) -> None:
    """Log ``each`` events from every one of ``threads`` threads; returns without close()."""

    def run(t: int) -> None:
        for i in range(each):
            log.file_started("mp", "lid", f"{tag}-t{t}-{i}")

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def configure_worker(dsn: str, table: str, spool_dir: str) -> None:
    EventLogger.configure(dsn, table=table, spool_dir=spool_dir, **QUIET)  # type: ignore[arg-type]


def pool_task(n: int) -> int:
    for i in range(50):
        EventLogger.file_started("pool", "lid", f"task{n}-{i}")
    return os.getpid()


def spawned_child(dsn: str, table: str, spool_dir: str) -> None:
    configure_worker(dsn, table, spool_dir)
    for i in range(300):
        EventLogger.file_completed("spawn", "lid", f"spawned-{i}")


@pytest.mark.parametrize("durability", ["memory", "spool"])
def test_a_forked_child_writes_its_own_events_and_never_the_parents(
        mysql_dsn: str, mysql_table: str, spool_dir: str, durability: str) -> None:
    log = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir, durability=durability,
                      **QUIET)  # type: ignore[arg-type]
    log_from_threads(log, "parent", 1, 500)  # still queued in the parent when it forks
    assert log.stats()["queue_depth"] == 500
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=log_from_threads, args=(log, f"child{k}", 2, 300)) for k in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert log.flush(timeout=30)
    log.close()
    assert landed(mysql_dsn, mysql_table, "WHERE fileName LIKE %s", ("parent-%",)) == (500, 500, 500)
    assert landed(mysql_dsn, mysql_table) == (1700, 1700, 1700)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_workers_that_never_close_land_every_event_once(
        mysql_dsn: str, mysql_table: str, spool_dir: str, method: str) -> None:
    context = multiprocessing.get_context(method)
    pool = context.Pool(2, initializer=configure_worker, initargs=(mysql_dsn, mysql_table, spool_dir),
                        maxtasksperchild=2)
    pids = pool.map(pool_task, range(8), chunksize=1)
    pool.close()
    pool.join()
    assert len(set(pids)) >= 3  # maxtasksperchild replaced workers: each one left on its own
    assert landed(mysql_dsn, mysql_table) == (400, 400, 400)


def test_a_spawned_process_that_never_closes_lands_every_event(
        mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    child = multiprocessing.get_context("spawn").Process(target=spawned_child,
                                                         args=(mysql_dsn, mysql_table, spool_dir))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert landed(mysql_dsn, mysql_table) == (300, 300, 300)


def test_8_threads_and_4_processes_into_one_table_with_exact_counts(
        mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    log = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir, batch_size=500, flush_interval=0.05)
    log.file_started("mp", "lid", "warmup")  # a running writer, inherited by every child
    parent = threading.Thread(target=log_from_threads, args=(log, "parent", 8, 1000))
    parent.start()
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=log_from_threads, args=(log, f"proc{k}", 8, 500)) for k in range(4)]
    for child in children:  # forked while the parent's 8 threads are logging
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    parent.join()
    assert log.flush(timeout=60)
    stats = log.stats()
    log.close()
    total = 1 + 8 * 1000 + 4 * 8 * 500
    assert landed(mysql_dsn, mysql_table) == (total, total, total)
    for k in range(4):
        assert landed(mysql_dsn, mysql_table, "WHERE fileName LIKE %s", (f"proc{k}-%",))[0] == 8 * 500
    assert stats["enqueued"] == stats["written"] == 1 + 8 * 1000  # the parent counts only its own
