"""`cofi-eventlog init-db`: create the events table, or upgrade an older one in place."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import count_of, rows_of

from cofi_eventlog import EventLogger
from cofi_eventlog.cli import main
from cofi_eventlog.database import Database, create_table_sql
from cofi_eventlog.sinks import COLUMNS
from cofi_eventlog.tools.init_db import existing_indexes, upgrade_steps, wanted_columns, wanted_indexes

# the shape an earlier logger gave batchExecutionLog: an auto-increment key, no eventId, no counts
OLD_SHAPE = {
    "mysql": "CREATE TABLE `{t}` (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, batchId VARCHAR(128) NOT NULL, "
             "stage VARCHAR(64), eventType VARCHAR(32) NOT NULL, fileName VARCHAR(1024), message TEXT, "
             "gpuIp VARCHAR(64), metadata JSON, createdAt DATETIME(6) NOT NULL)",
    "sqlite": 'CREATE TABLE "{t}" (id INTEGER PRIMARY KEY, batchId TEXT NOT NULL, stage TEXT, eventType TEXT NOT NULL, '
              "fileName TEXT, message TEXT, gpuIp TEXT, metadata TEXT, createdAt TEXT NOT NULL)",
}


@pytest.mark.parametrize("dialect", ["mysql", "sqlite"])
def test_the_wanted_shape_is_read_from_the_library_ddl(dialect: str) -> None:
    columns = wanted_columns(dialect, "t")
    assert tuple(columns) == COLUMNS
    assert [c.nullable for c in columns.values()] == [False, False, True, False, True, True, True, True, True,
                                                      True, False]
    if dialect == "mysql":
        assert (columns["fileName"].chars, columns["processed"].high, columns["createdAt"].fsp) == (1024, 2**63 - 1, 6)
    assert sorted(wanted_indexes(dialect, "t").values()) == [("batchId", "createdAt"),
                                                              ("batchId", "eventType", "createdAt"),
                                                              ("createdAt", "eventType")]


def test_print_sql_without_a_database(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COFI_EVENTLOG_DSN", raising=False)
    assert main(["init-db", "--print-sql"]) == 0
    assert capsys.readouterr().out.strip() == create_table_sql("mysql") + ";"
    assert main(["init-db", "--print-sql", "--dialect", "sqlite", "--table", "ev"]) == 0
    assert capsys.readouterr().out.strip() == create_table_sql("sqlite", "ev") + ";"
    assert main(["init-db"]) == 2
    assert "--dsn-file" in capsys.readouterr().err


def test_creates_a_missing_table(backend: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table = backend
    assert main(["init-db", "--dsn", dsn, "--table", table, "--print-sql"]) == 0
    assert "CREATE TABLE" in capsys.readouterr().out
    with Database(dsn) as db:
        assert not db.table_exists(table)
    assert main(["init-db", "--dsn", dsn, "--table", table]) == 0
    assert f"created {table}" in capsys.readouterr().out
    with Database(dsn) as db:
        assert db.columns(table) == list(COLUMNS)
        assert upgrade_steps(db, table) == []
    assert main(["init-db", "--dsn", dsn, "--table", table]) == 0
    assert "up to date" in capsys.readouterr().out


def test_upgrades_an_older_table_in_place(backend: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table = backend
    with Database(dsn) as db:
        db.execute(OLD_SHAPE[db.dialect].format(t=table))
        db.execute(f"INSERT INTO {db.name(table)} (batchId, stage, eventType, fileName, createdAt) "
                   "VALUES ('old', 'lid', 'error', 'a.wav', '2024-01-01 00:00:00.000000')")

    copy = ["--allow-copy"] if dsn.startswith("mysql") else []  # message TEXT -> MEDIUMTEXT copies the table
    assert main(["init-db", "--dsn", dsn, "--table", table, "--print-sql", *copy]) == 0
    planned = capsys.readouterr().out
    assert "ADD COLUMN" in planned and "eventId" in planned and "UNIQUE INDEX" in planned
    with Database(dsn) as db:
        assert "eventId" not in db.columns(table)

    assert main(["init-db", "--dsn", dsn, "--table", table, *copy]) == 0
    out = capsys.readouterr().out
    for column in ("eventId", "processed", "total"):
        assert f"add column {column}" in out
    with Database(dsn) as db:
        assert set(COLUMNS) <= set(db.columns(table))
        indexes = existing_indexes(db, table)
        assert (("eventId",), True) in indexes
        assert any(cols[:3] == ("batchId", "eventType", "createdAt") for cols, _ in indexes)
        assert upgrade_steps(db, table) == []

    with EventLogger(dsn, table=table, create_table=False) as log:  # the logger writes into the upgraded table
        log.file_error("new", "lid", "b.wav", "boom")
        log.progress("new", "lid", 1, 2)
        assert log.flush(10)
    rows = rows_of(dsn, table, "WHERE batchId = %s", ("new",))
    assert {r["eventType"] for r in rows} == {"error", "progress"}
    assert count_of(dsn, table) == 3
    assert main(["init-db", "--dsn", dsn, "--table", table]) == 0
    assert "up to date" in capsys.readouterr().out


def test_a_column_the_logger_cannot_fill_is_reported(backend: tuple[str, str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table = backend
    with Database(dsn) as db:
        db.execute(OLD_SHAPE[db.dialect].format(t=table).replace("metadata", "owner VARCHAR(20) NOT NULL, metadata"))
    assert main(["init-db", "--dsn", dsn, "--table", table]) == 1
    assert "owner" in capsys.readouterr().err


def test_the_dsn_may_come_from_a_file_or_the_environment(backend: tuple[str, str], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A password kept off the command line, where /proc/*/cmdline would show it."""
    dsn, table = backend
    secret = tmp_path / "dsn.txt"
    secret.write_text(dsn + "\n")
    assert main(["init-db", "--dsn-file", str(secret), "--table", table]) == 0
    assert f"created {table}" in capsys.readouterr().out
    monkeypatch.setenv("COFI_EVENTLOG_DSN", dsn)
    assert main(["init-db", "--table", table]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["init-db", "--dsn-file", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_a_transaction_holding_the_table_makes_init_db_wait_briefly_and_say_so(
        mysql_dsn: str, mysql_table: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An ALTER waits for the table's metadata lock, and new INSERTs queue behind it: never longer than
    --lock-wait-timeout."""
    with Database(mysql_dsn) as db:
        db.execute(OLD_SHAPE["mysql"].format(t=mysql_table))
    holder = Database(mysql_dsn)
    try:
        holder.execute("BEGIN")
        holder.fetchall(f"SELECT COUNT(*) FROM {holder.name(mysql_table)}")  # holds the metadata lock until COMMIT
        began = time.monotonic()
        assert main(["init-db", "--dsn", mysql_dsn, "--table", mysql_table, "--allow-copy",
                     "--lock-wait-timeout", "1"]) == 1
        assert time.monotonic() - began < 20
        assert "metadata lock was not free within --lock-wait-timeout" in capsys.readouterr().err
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert main(["init-db", "--dsn", mysql_dsn, "--table", mysql_table, "--allow-copy"]) == 0


def test_dedupe_without_another_key_keeps_the_earliest(mysql_dsn: str, mysql_table: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with Database(mysql_dsn) as db:
        db.execute(create_table_sql("mysql", mysql_table).replace("  PRIMARY KEY (`eventId`),\n", ""))
        rows = [(bytes([i]) * 16, "b", None, "file_start", f"f{i}-{copy}", None, None, None, None, None,
                 f"2026-01-0{1 + copy} 00:00:00.000000") for i in range(1, 6) for copy in range(1 + i % 3)]
        db.executemany(f"INSERT INTO {db.name(mysql_table)} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * 11)})",
                       rows)
    assert len(rows) == 11  # 5 events, 6 copies too many
    assert main(["init-db", "--dsn", mysql_dsn, "--table", mysql_table, "--dedupe"]) == 0
    assert "removed 6 duplicate row(s)" in capsys.readouterr().out
    assert sorted(str(r["fileName"]) for r in rows_of(mysql_dsn, mysql_table)) == [f"f{i}-0" for i in range(1, 6)]
