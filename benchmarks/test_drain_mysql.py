"""How fast 100K events (a 10K-file batch) become durable in MySQL/MariaDB, against the two ways a
pipeline would write them by hand, in the same run.

- library: 100K EventLogger calls, then flush() until every event is in the database; the clock
  covers the calls too, so the figure is "from the first call to durable".
- executemany: pymysql's executemany, 1000 rows a call, autocommit.
- per-row: one single-row INSERT per event, autocommit.

The hand-written loops get their rows ready-made (ids, timestamps, tuples); the library builds them
itself. Each round writes into a fresh table. The figures are printed as events/s after the table;
these benchmarks assert row counts, never times.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from cofi_eventlog import EventLogger
from cofi_eventlog.database import Database
from cofi_eventlog.sinks import COLUMNS
from cofi_eventlog.tools.simulate.pipeline import STAGES, Plan, file_name, run_stages

FILES = 10_000
PLAN = Plan.make(FILES, 0.0)
EVENTS = PLAN.events()  # 100,000
GROUP = "drain 100K events into MySQL"

pytestmark = [pytest.mark.slow, pytest.mark.mysql]


def ready_rows() -> list[tuple[Any, ...]]:
    """The batch's events as finished rows, in the order the pipeline logs them."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return [(uuid.uuid4().bytes, "bench", stage, kind, file_name(i), None, "10.0.0.12", None, None, None, now)
            for stage in STAGES for i in range(FILES) for kind in ("file_start", "file_complete")]


def report(benchmark: Any, summary: list[str], name: str) -> None:
    if benchmark.disabled:  # run once as a smoke test (plain `pytest benchmarks/`): no figures
        return
    median = benchmark.stats.stats.median
    benchmark.extra_info["events_per_second"] = round(EVENTS / median)
    summary.append(f"drain {EVENTS:,} events, {name}: {EVENTS / median:,.0f} events/s (median of "
                   f"{benchmark.stats.stats.rounds} rounds, {median:.2f} s)")


def counted(dsn: str, table: str, batch_id: str) -> int:
    with Database(dsn) as db:
        return int(db.scalar(f"SELECT COUNT(*) FROM {db.name(table)} WHERE batchId = %s", (batch_id,)))


@pytest.mark.benchmark(group=GROUP)
def test_library(benchmark: Any, summary: list[str], mysql_dsn: str, new_table: Callable[[], str],
                 tmp_path: Path) -> None:
    rounds: list[tuple[EventLogger, str]] = []

    def setup() -> tuple[tuple[EventLogger, str], dict[str, Any]]:
        table = new_table()
        logger = EventLogger(mysql_dsn, table=table, spool_dir=str(tmp_path / table))
        logger.batch_started("warm-up")  # connects and creates the table outside the clock
        assert logger.flush(30)
        rounds.append((logger, table))
        return (logger, table), {}

    def drain(logger: EventLogger, table: str) -> None:
        run_stages(logger, PLAN, range(FILES), table, "10.0.0.12")
        assert logger.flush(600)

    def teardown(logger: EventLogger, table: str) -> None:
        logger.close()  # the next round's logger gets the machine to itself

    benchmark.pedantic(drain, setup=setup, teardown=teardown, rounds=3)
    for logger, _ in rounds:
        logger.close()  # idempotent; a disabled benchmark runs no teardown
    assert [counted(mysql_dsn, table, table) for _, table in rounds] == [EVENTS] * len(rounds)
    report(benchmark, summary, "EventLogger, first call to durable")


def hand_written(benchmark: Any, summary: list[str], mysql_dsn: str, new_table: Callable[[], str], name: str,
                 write: Callable[[Any, str, Sequence[tuple[Any, ...]]], None], rounds: int) -> None:
    rows = ready_rows()
    db = Database(mysql_dsn)  # a plain pymysql connection, utf8mb4, autocommit
    tables: list[str] = []

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        tables.append(new_table())
        db.create_events_table(tables[-1])
        return (tables[-1],), {}

    def run(table: str) -> None:
        sql = (f"INSERT IGNORE INTO `{table}` ({','.join(f'`{c}`' for c in COLUMNS)}) "
               f"VALUES ({','.join(['%s'] * len(COLUMNS))})")
        write(db.conn, sql, rows)

    try:
        benchmark.pedantic(run, setup=setup, rounds=rounds)
    finally:
        db.close()
    assert [counted(mysql_dsn, t, "bench") for t in tables] == [EVENTS] * len(tables)
    report(benchmark, summary, name)


def executemany_loop(conn: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    with conn.cursor() as cur:
        for start in range(0, len(rows), 1000):
            cur.executemany(sql, rows[start:start + 1000])


def per_row_loop(conn: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    with conn.cursor() as cur:
        for row in rows:
            cur.execute(sql, row)


@pytest.mark.benchmark(group=GROUP)
def test_pymysql_executemany(benchmark: Any, summary: list[str], mysql_dsn: str,
                             new_table: Callable[[], str]) -> None:
    hand_written(benchmark, summary, mysql_dsn, new_table, "pymysql executemany, 1000 rows a call",
                 executemany_loop, rounds=3)


@pytest.mark.benchmark(group=GROUP)
def test_per_row_insert(benchmark: Any, summary: list[str], mysql_dsn: str, new_table: Callable[[], str]) -> None:
    hand_written(benchmark, summary, mysql_dsn, new_table, "one INSERT per row, autocommit", per_row_loop, rounds=1)
