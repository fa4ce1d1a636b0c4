"""``cofi-eventlog prune --older-than 90d`` on a 1M-row events table, on MariaDB and SQLite.

The table holds one event every 31.5 s over the last 365 days, so about three quarters are older than 90
days. While prune runs, a writer inserts a new event every 20 ms, as a live pipeline would, and its slowest
INSERT is recorded: a prune that held long locks would show there. The counts are asserted; the times are
printed, never asserted. One round: a second would find nothing left to prune.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cofi_eventlog.cli import main
from cofi_eventlog.database import Database
from cofi_eventlog.events import EventIds
from cofi_eventlog.sinks import iso_utc

ROWS = 1_000_000
SPAN_NS = 365 * 86_400 * 10**9
STEP_NS = SPAN_NS // ROWS
DAY_NS = 86_400 * 10**9
BATCH_ROWS = DAY_NS // STEP_NS  # one batch a day: prune deletes a batch whole, once all of it is older

pytestmark = pytest.mark.slow


def fill_mysql(db: Database, table: str, now_ns: int) -> None:
    """1M rows in one INSERT ... SELECT from MariaDB's sequence engine: eventId = time_ns | row number."""
    db.execute("SET time_zone = '+00:00'")
    first = now_ns - SPAN_NS
    db.execute(f"""INSERT INTO {db.name(table)} (eventId, batchId, stage, eventType, fileName, gpuIp, createdAt)
        SELECT UNHEX(CONCAT(LPAD(HEX({first} + seq * {STEP_NS}), 16, '0'), LPAD(HEX(seq), 16, '0'))),
               CONCAT('batch-', seq DIV {BATCH_ROWS}), ELT(1 + seq MOD 5, 'lid', 'llm1', 'llm2', 'audit', 'metadata'),
               IF(seq MOD 2, 'file_start', 'file_complete'), CONCAT('call-', LPAD(seq MOD 10000, 6, '0'), '.wav'),
               CONCAT('10.0.0.', seq MOD 8),
               TIMESTAMPADD(MICROSECOND, ({first} + seq * {STEP_NS}) DIV 1000, '1970-01-01 00:00:00')
        FROM seq_0_to_{ROWS - 1}""")


def fill_sqlite(db: Database, table: str, now_ns: int) -> None:
    first = now_ns - SPAN_NS
    stages = ("lid", "llm1", "llm2", "audit", "metadata")
    sql = db.insert_events_sql(table)
    for start in range(0, ROWS, 100_000):
        rows = []
        for seq in range(start, start + 100_000):
            ns = first + seq * STEP_NS
            rows.append((ns.to_bytes(8, "big") + seq.to_bytes(8, "big"), f"batch-{seq // BATCH_ROWS}",
                         stages[seq % 5], "file_start" if seq % 2 else "file_complete",
                         f"call-{seq % 10000:06d}.wav", None, f"10.0.0.{seq % 8}", None, None, None,
                         iso_utc(ns // 1000)))
        db.execute("BEGIN")
        db.executemany(sql, rows)
        db.execute("COMMIT")


class Writer(threading.Thread):
    """Inserts a new event every 20 ms on its own connection and records how long each INSERT took."""

    def __init__(self, dsn: str, table: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.table = dsn, table
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        ids = EventIds()
        with Database(self.dsn) as db:
            sql = db.insert_events_sql(self.table)
            seq = 0
            while not self.stop.is_set():
                ns = time.time_ns()
                row = (ids.make(ns, seq), "live", "lid", "file_start", f"new-{seq}.wav", None, None, None, None,
                       None, iso_utc(ns // 1000))
                began = time.perf_counter()
                db.execute(sql, row)
                self.latencies.append(time.perf_counter() - began)
                seq += 1
                self.stop.wait(0.02)


@pytest.mark.benchmark(group="prune a 1M-row table")
@pytest.mark.parametrize("dialect", ["mysql", "sqlite"])
def test_prune_a_million_rows(benchmark: Any, dialect: str, request: pytest.FixtureRequest, tmp_path: Path,
                              summary: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    if dialect == "mysql":
        dsn = request.getfixturevalue("mysql_dsn")
        table = request.getfixturevalue("new_table")()
        fill: Callable[[Database, str, int], Any] = fill_mysql
    else:
        dsn, table, fill = f"sqlite:///{tmp_path / 'prune.db'}", "batchExecutionLog", fill_sqlite
    now = time.time_ns()
    began = time.monotonic()
    with Database(dsn) as db:
        db.create_events_table(table)
        fill(db, table, now)
        assert db.scalar(f"SELECT COUNT(*) FROM {db.name(table)}") == ROWS
    built = time.monotonic() - began
    last = [min((seq // BATCH_ROWS + 1) * BATCH_ROWS, ROWS) - 1 for seq in range(ROWS)]  # of each row's batch
    older = sum(1 for seq in range(ROWS) if SPAN_NS - last[seq] * STEP_NS > 90 * DAY_NS)

    writer = Writer(dsn, table)
    writer.start()
    code = benchmark.pedantic(main, args=(["prune", "--dsn", dsn, "--table", table, "--older-than", "90d", "--json",
                                           "--quiet"],), rounds=1, iterations=1)
    writer.stop.set()
    writer.join()
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert abs(result["deleted"] - older) in (0, BATCH_ROWS)  # the batch on the cutoff ages while the table is built
    assert result["chunks"] == -(-result["deleted"] // 5000)
    with Database(dsn) as db:
        left = int(db.scalar(f"SELECT COUNT(*) FROM {db.name(table)}"))
    assert left == ROWS - result["deleted"] + len(writer.latencies)
    slowest = sorted(writer.latencies)
    summary.append(f"prune --older-than 90d, {dialect}, {ROWS:,}-row table (built in {built:.0f} s): deleted "
                   f"{result['deleted']:,} rows in {result['chunks']:,} chunks of 5,000, {result['seconds']:.1f} s "
                   f"({result['deleted'] / result['seconds']:,.0f} rows/s); longest chunk "
                   f"{result['longest_chunk_seconds'] * 1000:.0f} ms; a writer's {len(slowest)} INSERTs meanwhile: "
                   f"median {slowest[len(slowest) // 2] * 1000:.1f} ms, slowest {slowest[-1] * 1000:.0f} ms")
