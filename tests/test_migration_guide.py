"""docs/migration.md, followed as written: its `verify` and `migrate` commands, in its order, on a copy of a
legacy table with a case-insensitive collation, numbers JSON would bend, a 9999-12-31 date and a second
source table with the same ids and times. It must end with both tables dropped, their backups intact and
every legacy row's event in batchExecutionLog."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from cofi_eventlog import EventLogger
from cofi_eventlog.database import Database
from cofi_eventlog.tools.migrate.mapping import migrated_event_id, source_tag, utc_datetime
from cofi_eventlog.tools.simulate.legacy import processing_logs_ddl

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "migration.md"
SECOND = "processing_logs_host2"
COLUMNS = ("id", "call_id", "batch_id", "stage_name", "status", "error_message", "input_payload", "created_at")


def guide_commands() -> list[str]:
    """The guide's `cofi-eventlog verify` and `cofi-eventlog migrate` lines, in the guide's order."""
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith(("cofi-eventlog verify", "cofi-eventlog migrate"))]


def legacy_table(db: Database, table: str) -> None:
    """The legacy DDL with a DATETIME created_at (a TIMESTAMP stops at 2038) and a case-insensitive batch_id."""
    ddl = processing_logs_ddl(db.dialect, table)
    ddl = ddl.replace("TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)", "DATETIME(6) NOT NULL")
    ddl = ddl.replace("`batch_id` VARCHAR(64) NOT NULL", "`batch_id` VARCHAR(64) COLLATE utf8mb4_general_ci NOT NULL")
    db.execute(ddl.replace("batch_id TEXT NOT NULL", "batch_id TEXT NOT NULL COLLATE NOCASE"))


def rows_for(prefix: str) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = [
        (1, f"{prefix}a.wav", "Batch-A", "lid", "success", None, '{"id": 18446744073709551616}', "2024-03-01 10:00:00"),
        (2, f"{prefix}b.wav", "batch-a", "lid", "failed", "boom", '{"p": 1e-400, "p": 2}', "9999-12-31 23:59:59"),
        (3, f"{prefix}c.wav", "batch-a", "llm1", "failed", "deep", "[" * 35 + "]" * 35, "1969-07-20 20:17:40"),
        (4, f"{prefix}d.wav", "TEST_BATCH", "lid", "failed", "old run", None, "2024-03-02 10:00:00"),
    ]
    rows += [(i, f"{prefix}f{i}.wav", f"batch-{i % 7}", "llm2", "success", None, json.dumps({"n": i}),
              f"2024-03-03 10:{i // 60 % 60:02d}:{i % 60:02d}") for i in range(5, 400)]
    return rows


def snapshot(db: Database, table: str) -> list[tuple[Any, ...]]:
    return db.fetchall(f"SELECT {', '.join(COLUMNS)} FROM {db.name(table)} ORDER BY id")


def test_the_migration_guide_end_to_end(own_database: str) -> None:
    dsn = own_database
    with Database(dsn) as db:
        for table, prefix in (("processing_logs", ""), (SECOND, "h2-")):
            legacy_table(db, table)
            db.executemany(f"INSERT INTO {db.name(table)} ({', '.join(COLUMNS)}) VALUES "
                           f"({', '.join(['%s'] * len(COLUMNS))})", rows_for(prefix))
        before = {t: snapshot(db, t) for t in ("processing_logs", SECOND)}
    with EventLogger(dsn) as log:  # the test batch, logged by the new code after it was deployed
        log.file_started("TEST_BATCH", "lid", "x.wav")
        log.file_error("TEST_BATCH", "lid", "x.wav", "decode failed")

    env = {**os.environ, "COFI_EVENTLOG_DSN": dsn,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    commands = guide_commands()
    assert [c.split("#")[0].split()[1] for c in commands] == ["verify", "migrate", "migrate", "migrate", "migrate",
                                                               "migrate"]
    for command in commands:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr

    with Database(dsn) as db:
        assert not db.table_exists("processing_logs") and not db.table_exists(SECOND)
        events = {bytes(r[0]): r for r in db.fetchall("SELECT eventId, batchId, fileName, metadata, createdAt "
                                                      "FROM batchExecutionLog")}
        for table in ("processing_logs", SECOND):
            assert snapshot(db, f"{table}_backup") == before[table]  # the backup, intact
            for row in before[table]:  # every row accounted for: its event, exact
                event = events[migrated_event_id(source_tag(table), row[0], utc_datetime(row[7]))]
                assert (event[1], event[2]) == (row[2], row[1]), row
    assert len(events) == 2 * 399 + 2
    big = next(e for e in events.values() if e[2] == "a.wav")
    assert json.loads(big[3])["payload"] == '{"id": 18446744073709551616}'
    end = next(e for e in events.values() if e[2] == "h2-b.wav")
    assert str(end[4]).startswith("9999-12-31 23:59:59") or end[4] == datetime(9999, 12, 31, 23, 59, 59)
