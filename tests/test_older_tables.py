"""An older batchExecutionLog, narrower than the library's: the logger bounds values to it (cut, counted,
marked, never dead-lettered), and init-db widens it, after which every value is stored whole."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import pytest
from conftest import rows_of

from cofi_eventlog import EventLogger
from cofi_eventlog.cli import main
from cofi_eventlog.database import Database, create_table_sql
from cofi_eventlog.events import EventIds
from cofi_eventlog.sinks import COLUMNS, iso_utc
from cofi_eventlog.tools import init_db

LONG_PATH = "/data/in/" + "p" * 305  # 314 characters
LONG_MESSAGE = "é" * 40_000  # 80,000 bytes: more than a TEXT column holds
BIG_COUNT = 3_000_000_000  # more than an INT holds

# one older shape per case: (the library's column definition, the older one)
CASES: dict[str, list[tuple[str, str]]] = {
    "fileName VARCHAR(255)": [("`fileName` VARCHAR(1024) NULL", "`fileName` VARCHAR(255) NULL")],
    "eventId CHAR(36)": [("`eventId` BINARY(16) NOT NULL", "`eventId` CHAR(36) NOT NULL")],
    "processed INT": [("`processed` BIGINT NULL", "`processed` INT NULL")],
    "message TEXT": [("`message` MEDIUMTEXT NULL", "`message` TEXT NULL")],
    "stage, fileName NOT NULL": [("`stage` VARCHAR(64) NULL", "`stage` VARCHAR(64) NOT NULL"),
                                 ("`fileName` VARCHAR(1024) NULL", "`fileName` VARCHAR(1024) NOT NULL")],
}


# The changes MariaDB makes only with a copy of the table; the others are INSTANT or INPLACE with LOCK=NONE.
COPIED = {"eventId CHAR(36)", "processed INT", "message TEXT"}


def older_table(dsn: str, table: str, changes: list[tuple[str, str]]) -> None:
    ddl = create_table_sql("mysql", table)
    for ours, theirs in changes:
        assert ours in ddl
        ddl = ddl.replace(ours, theirs)
    with Database(dsn) as db:
        db.execute(ddl)


def log_the_hard_events(dsn: str, table: str, spool_dir: str, batch: str) -> dict[str, Any]:
    """A 314-character path with a 40,000-character message, a count over 2**31, and the batch and stage
    events, which have no file name (and the batch events no stage)."""
    with EventLogger(dsn, table=table, spool_dir=spool_dir, create_table=False) as log:
        log.batch_started(batch, total_files=1)
        log.stage_started(batch, "lid")
        log.file_error(batch, "lid", LONG_PATH, LONG_MESSAGE, "10.0.0.7")
        log.progress(batch, "lid", BIG_COUNT, BIG_COUNT)
        flushed = log.flush(15)
        stats = log.stats()
    return {"flushed": flushed, **stats}


def stored(dsn: str, table: str, batch: str) -> dict[str, dict[str, Any]]:
    return {str(r["eventType"]): r for r in rows_of(dsn, table, "WHERE batchId = %s", (batch,))}


@pytest.mark.parametrize("case", CASES)
def test_an_older_table_is_bounded_then_widened(case: str, mysql_dsn: str, mysql_table: str, spool_dir: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table = mysql_dsn, mysql_table
    older_table(dsn, table, CASES[case])

    # before init-db: what fits is stored, cut or clamped where the column is narrower, and counted
    before = log_the_hard_events(dsn, table, spool_dir, "before")
    assert before["dead_lettered"] == 0 and before["dropped"] == 0
    if case == "eventId CHAR(36)":  # no id can be stored in it: the events wait in the spool, named why
        assert before["flushed"] is False and "init-db" in str(before["last_error"])
        assert before["unwritten"] == 4  # waiting in the journal
    else:
        assert before["flushed"] is True and before["written"] == 4
        assert before["coerced"] >= 1
        rows = stored(dsn, table, "before")
        error = rows["error"]
        notes = json.loads(str(error["metadata"] or rows["progress"]["metadata"]))["coerced"]
        if case == "fileName VARCHAR(255)":
            assert len(str(error["fileName"])) == 255 and str(error["fileName"]).startswith(LONG_PATH[:200])
            assert "fileName: 314 chars, cut to fit varchar(255)" in notes
        if case == "message TEXT":
            assert len(str(error["message"]).encode()) <= 65535 and "truncated" in str(error["message"])
        if case == "processed INT":
            assert rows["progress"]["processed"] == 2**31 - 1
        if case == "stage, fileName NOT NULL":
            assert rows["batch_start"]["stage"] == "" and rows["progress"]["fileName"] == ""

    # init-db: the plan first, then the change, then nothing left to do. A change the server makes only by
    # copying the table (every INSERT waits for the copy) is named and needs --allow-copy.
    copy = case in COPIED
    args = ["init-db", "--dsn", dsn, "--table", table]
    assert main([*args, "--print-sql"]) == (1 if copy else 0)
    planned, err = capsys.readouterr()
    assert "MODIFY COLUMN" in planned and "widen" in planned
    assert ("ALGORITHM=COPY, LOCK=SHARED" in planned) is copy and ("needs a copy" in err) is copy
    assert "-- lock: " in planned
    for _, theirs in CASES[case]:
        assert f"widen {theirs.split('`')[1]}" in planned
    with Database(dsn) as db:  # the plan changed nothing
        assert init_db.plan(db, table).steps
    if copy:
        assert main(args) == 1
        out, err = capsys.readouterr()
        assert "widen" not in out and "--allow-copy" in err and "pt-online-schema-change" in err
        args.append("--allow-copy")
    assert main(args) == 0
    assert "widen" in capsys.readouterr().out
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out

    # after: every value whole, nothing coerced; the spool of the first logger is written too
    after = log_the_hard_events(dsn, table, spool_dir, "after")
    assert after["flushed"] is True and after["coerced"] == 0 and after["dead_lettered"] == 0
    rows = stored(dsn, table, "after")
    assert rows["error"]["fileName"] == LONG_PATH and rows["error"]["message"] == LONG_MESSAGE
    assert rows["progress"]["processed"] == BIG_COUNT
    assert rows["batch_start"]["stage"] is None and rows["stage_start"]["fileName"] is None
    assert len(stored(dsn, table, "before")) == 4


def test_what_init_db_cannot_widen_is_named(mysql_dsn: str, mysql_table: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    older_table(mysql_dsn, mysql_table, [("`processed` BIGINT NULL", "`processed` BIGINT UNSIGNED NULL"),
                                         ("`total` BIGINT NULL", "`total` VARCHAR(10) NULL")])
    assert main(["init-db", "--dsn", mysql_dsn, "--table", mysql_table]) == 1
    err = capsys.readouterr().err
    assert "processed is bigint(20) unsigned" in err and "total is varchar(10)" in err


def test_an_index_added_to_the_ddl_is_planned_without_more_code(backend: tuple[str, str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    dsn, table = backend
    with Database(dsn) as db:
        dialect = db.dialect
        db.create_events_table(table)
        assert init_db.plan(db, table).steps == []
        ddl = create_table_sql(dialect, table)
        added = ddl.replace("  PRIMARY KEY (`eventId`),", "  PRIMARY KEY (`eventId`),\n  KEY `idx_gpu_time` "
                            "(`gpuIp`, `createdAt`),") if dialect == "mysql" else \
            ddl + f'\nCREATE INDEX IF NOT EXISTS "{table}_gpu_time" ON "{table}" (gpuIp, createdAt);'
        assert added != ddl
        monkeypatch.setattr(init_db, "create_table_sql", lambda *_: added)
        steps = init_db.plan(db, table).steps
        assert [s.why for s in steps] == [("add index on (gpuIp, createdAt)",)]


def test_sqlite_table_with_a_long_name_can_be_checked_again(tmp_path: Any,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """SQLite names a table's own unique index sqlite_autoindex_<table>_1: over 64 characters here."""
    dsn, table = f"sqlite:///{tmp_path / 'e.db'}", "t" * 60
    with Database(dsn) as db:
        db.execute(f'CREATE TABLE "{table}" (eventId BLOB NOT NULL UNIQUE, batchId TEXT NOT NULL, stage TEXT '
                   "NOT NULL, eventType TEXT NOT NULL, fileName TEXT, message TEXT, gpuIp TEXT, processed INTEGER, "
                   "total INTEGER, metadata TEXT, createdAt TEXT NOT NULL)")
    assert main(["init-db", "--dsn", dsn, "--table", table]) == 1  # indexes added; NOT NULL on stage named
    out, err = capsys.readouterr()
    assert "add index" in out and "stage is NOT NULL" in err and "SQLite cannot change" in err
    assert main(["init-db", "--dsn", dsn, "--table", table]) == 1
    assert "up to date as far as init-db can bring it" in capsys.readouterr().out
    with EventLogger(dsn, table=table, spool_dir=str(tmp_path / "spool")) as log:  # the sink fills stage
        log.batch_started("b", total_files=1)
        assert log.flush(10)
        assert log.stats()["coerced"] == 1 and log.stats()["dead_lettered"] == 0
    assert rows_of(dsn, table)[0]["stage"] == ""


def keyless_table(dsn: str, table: str) -> None:
    """The older shape keyed by an AUTO_INCREMENT id, eventId an ordinary column: a retry could double rows."""
    with Database(dsn) as db:
        ddl = create_table_sql(db.dialect, table)
        if db.dialect == "mysql":
            ddl = ddl.replace("PRIMARY KEY (`eventId`)", "`id` BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY")
            db.execute(ddl)
        else:
            ddl = ddl.replace("eventId BLOB NOT NULL PRIMARY KEY", "id INTEGER PRIMARY KEY, eventId BLOB NOT NULL")
            assert isinstance(db.conn, sqlite3.Connection)
            db.conn.executescript(ddl)


def duplicates(dsn: str, table: str) -> tuple[int, int]:
    """(rows, rows that repeat an eventId)."""
    with Database(dsn) as db:
        rows, distinct = db.fetchall(f"SELECT COUNT(*), COUNT(DISTINCT eventId) FROM {db.name(table)}")[0]
    return int(rows), int(rows) - int(distinct)


def settled_stats(log: EventLogger, words: str, timeout: float = 15.0) -> dict[str, Any]:
    """The logger's stats once its last error holds ``words`` (the writer may still be retrying)."""
    deadline = time.monotonic() + timeout
    while words not in str(log.stats()["last_error"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return log.stats()


def test_a_table_without_a_unique_event_id_is_never_written_twice(
        backend: tuple[str, str], spool_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table = backend
    keyless_table(dsn, table)
    ids, now = EventIds(), time.time_ns()
    rows = [(ids.make(now + i, i), "old", "lid", "file_start", f"f{i}", None, None, None, None, None,
             iso_utc((now + i) // 1000)) for i in range(1000)]
    with Database(dsn) as db:  # what retries into the keyless table left: 1,000 events, 300 of them twice
        insert = f"INSERT INTO {db.name(table)} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * 11)})"
        db.executemany(insert, rows + rows[:300])
    assert duplicates(dsn, table) == (1300, 300)

    # the logger refuses the table, saying why and what to run; the events wait in the spool
    with EventLogger(dsn, table=table, spool_dir=spool_dir, create_table=False) as log:
        for i in range(50):
            log.file_started("new", "lid", f"n{i}")
        assert log.flush(2) is False
        stats = settled_stats(log, "no PRIMARY or UNIQUE key on eventId")
    assert "no PRIMARY or UNIQUE key on eventId" in str(stats["last_error"])
    assert "cofi-eventlog init-db" in str(stats["last_error"])
    assert stats["dropped"] == 0 and stats["dead_lettered"] == 0 and stats["written"] == 0
    assert duplicates(dsn, table) == (1300, 300)

    # init-db cannot add the key over the duplicates: it says so, and how many
    args = ["init-db", "--dsn", dsn, "--table", table]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert "300 duplicate row(s) (300 id(s) stored more than once)" in err and "--dedupe" in err
    assert "unique" not in out
    assert main([*args, "--dedupe", "--print-sql"]) == 0
    planned = capsys.readouterr().out
    assert "-- remove 300 duplicate row(s), keeping the first of each eventId" in planned and "DELETE" in planned
    assert duplicates(dsn, table) == (1300, 300)  # the plan changed nothing
    assert main([*args, "--dedupe"]) == 0
    out = capsys.readouterr().out
    assert "removed 300 duplicate row(s)" in out and "make eventId unique" in out
    assert duplicates(dsn, table) == (1000, 0)
    with Database(dsn) as db:  # the first of each was kept
        assert db.scalar(f"SELECT MAX(id) FROM {db.name(table)}") == 1000
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out

    # now the spooled events land, once
    with EventLogger(dsn, table=table, spool_dir=spool_dir, create_table=False) as log:
        assert log.flush(15)
    assert duplicates(dsn, table) == (1050, 0)


def test_a_unique_key_on_more_than_event_id_is_not_enough(backend: tuple[str, str], spool_dir: str) -> None:
    dsn, table = backend
    keyless_table(dsn, table)
    with Database(dsn) as db:
        db.execute(f"CREATE UNIQUE INDEX {table}_pair ON {db.name(table)} (eventId, createdAt)")
    with EventLogger(dsn, table=table, spool_dir=spool_dir, create_table=False) as log:
        log.file_started("b", "lid", "f")
        assert log.flush(2) is False
        assert "no PRIMARY or UNIQUE key on eventId alone" in str(settled_stats(log, "eventId")["last_error"])
    with Database(dsn) as db:
        db.execute(f"CREATE UNIQUE INDEX {table}_id ON {db.name(table)} (eventId)")
    with EventLogger(dsn, table=table, spool_dir=spool_dir, create_table=False) as log:
        assert log.flush(10)
    assert duplicates(dsn, table) == (1, 0)
