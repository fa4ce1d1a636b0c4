"""``cofi-eventlog init-db`` bringing a 2M-row older table up to date while a writer inserts an event every
5 ms: the writer's longest INSERT during init-db, as a ratio of an uncontended one.

The older table is keyed by an AUTO_INCREMENT id, its eventId an ordinary column, its fileName VARCHAR(255),
without the processed and total columns and without the library's indexes. init-db adds the columns and
widens fileName with ALGORITHM=INSTANT, and builds the unique key and the three indexes with
ALGORITHM=INPLACE, LOCK=NONE. The counts are asserted; the times are printed, never asserted. One round.
COFI_BENCH_INIT_DB_ROWS sets another table size for a quick run.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from cofi_eventlog.cli import main
from cofi_eventlog.database import Database
from cofi_eventlog.events import EventIds
from cofi_eventlog.sinks import iso_utc

ROWS = int(os.environ.get("COFI_BENCH_INIT_DB_ROWS", 2_000_000))
STEP_NS = 15 * 10**9  # one event every 15 s, back from now

pytestmark = pytest.mark.slow

OLDER = """CREATE TABLE {t} (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, eventId BINARY(16) NULL, batchId VARCHAR(128) NOT NULL,
  stage VARCHAR(64) NULL, eventType VARCHAR(32) NOT NULL, fileName VARCHAR(255) NULL, message MEDIUMTEXT NULL,
  gpuIp VARCHAR(64) NULL, metadata JSON NULL, createdAt DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"""


class Writer(threading.Thread):
    """Inserts an event every 5 ms on its own connection, in the older table's columns, timing each INSERT."""

    def __init__(self, dsn: str, table: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.table = dsn, table
        self.timed: list[tuple[float, float]] = []  # (when it began, seconds it took)
        self.stop = threading.Event()

    def run(self) -> None:
        ids = EventIds()
        with Database(self.dsn) as db:
            sql = (f"INSERT INTO {db.name(self.table)} (eventId, batchId, stage, eventType, fileName, createdAt) "
                   "VALUES (%s, 'live', 'lid', 'file_start', %s, %s)")
            seq = 0
            while not self.stop.is_set():
                ns = time.time_ns()
                began = time.perf_counter()
                db.execute(sql, (ids.make(ns, seq), f"new-{seq}.wav", iso_utc(ns // 1000)))
                self.timed.append((began, time.perf_counter() - began))
                seq += 1
                self.stop.wait(0.005)

    def between(self, start: float, end: float) -> list[float]:
        return sorted(took for began, took in self.timed if start <= began + took and began <= end)


@pytest.mark.benchmark(group="init-db on a 2M-row table")
def test_init_db_while_a_writer_inserts(benchmark: Any, mysql_dsn: str, new_table: Any, summary: list[str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    table = new_table()
    now = time.time_ns()
    began = time.monotonic()
    with Database(mysql_dsn) as db:
        db.execute(OLDER.format(t=db.name(table)))
        first = now - ROWS * STEP_NS
        db.execute(f"""INSERT INTO {db.name(table)} (eventId, batchId, stage, eventType, fileName, gpuIp, createdAt)
            SELECT UNHEX(CONCAT(LPAD(HEX({first} + seq * {STEP_NS}), 16, '0'), LPAD(HEX(seq), 16, '0'))),
                   CONCAT('batch-', seq DIV 5000), ELT(1 + seq MOD 5, 'lid', 'llm1', 'llm2', 'audit', 'metadata'),
                   IF(seq MOD 2, 'file_start', 'file_complete'), CONCAT('call-', LPAD(seq MOD 10000, 6, '0'), '.wav'),
                   CONCAT('10.0.0.', seq MOD 8),
                   TIMESTAMPADD(MICROSECOND, ({first} + seq * {STEP_NS}) DIV 1000, '1970-01-01 00:00:00')
            FROM seq_0_to_{ROWS - 1}""")
    built = time.monotonic() - began

    writer = Writer(mysql_dsn, table)
    writer.start()
    time.sleep(5)  # uncontended
    start = time.perf_counter()
    code = benchmark.pedantic(main, args=(["init-db", "--dsn", mysql_dsn, "--table", table],), rounds=1,
                              iterations=1)
    end = time.perf_counter()
    time.sleep(1)
    writer.stop.set()
    writer.join()
    out, err = capsys.readouterr()
    assert code == 0, out + err
    quiet = writer.between(0, start - 0.001)
    during = writer.between(start, end)
    assert len(quiet) > 100 and len(during) > 10
    with Database(mysql_dsn) as db:
        assert int(db.scalar(f"SELECT COUNT(*) FROM {db.name(table)}")) == ROWS + len(writer.timed)
        unique = db.fetchall("SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() "
                             "AND table_name = %s AND column_name = 'eventId' AND non_unique = 0", (table,))
        assert unique == [(1,)]
    median = quiet[len(quiet) // 2]
    summary.append(
        f"init-db on a {ROWS:,}-row older table (built in {built:.0f} s), {end - start:.1f} s: a writer's "
        f"{len(during)} INSERTs meanwhile: median {during[len(during) // 2] * 1000:.1f} ms, longest "
        f"{during[-1] * 1000:.0f} ms = {during[-1] / median:.0f}x an uncontended INSERT (median "
        f"{median * 1000:.2f} ms, longest {quiet[-1] * 1000:.1f} ms of {len(quiet)}); the longest is "
        f"{during[-1] / (end - start):.1%} of init-db's time")
    print("\n" + out)
