"""Sinks against the real databases: quoting as safe as the driver's, statement caps, errors, secrets."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import rows_of

from cofi_eventlog import EventLogger, SinkError
from cofi_eventlog.database import Database, create_table_sql
from cofi_eventlog.events import EventIds, normalize
from cofi_eventlog.sinks import COLUMNS, MySQLSink, SQLiteSink, parse_dsn
from cofi_eventlog.sinks.columns import declared, describe, mysql_columns, sqlite_columns
from cofi_eventlog.sinks.fit import Fitter
from cofi_eventlog.sinks.mysql import NO_BACKSLASH_ESCAPES

HOSTILE = [
    "'); DROP TABLE batchExecutionLog; --",
    "\\'", "\\", "\\\\'", "'", "''", '"', "\x00", "\x1a", "\n\r\t", "\\0\\n", "%s %(x)s {0}",
    "`backtick`", "é ü ß 漢字 😀 \u202e", "a\\", "x'||(SELECT 1)||'",
]


def _row(i: int, text: str) -> tuple[Any, ...]:
    raw = ("error", f"b{i}", "lid", text, text, text, None, None, {"t": text}, None, 1_700_000_000_000_000_000 + i, i)
    return normalize(raw, EventIds())[0]


def _log_hostile(dsn: str, table: str, spool_dir: str, on_connect: Any = None) -> None:
    with EventLogger(dsn, table=table, spool_dir=spool_dir, on_connect=on_connect) as log:
        for i, text in enumerate(HOSTILE):
            log.file_error(f"b{i}", "lid", text, text, text, payload={"t": text})
        assert log.flush(10)


def _check_hostile(dsn: str, table: str) -> None:
    rows = rows_of(dsn, table)
    got = {r["batchId"]: r for r in rows}
    assert len(rows) == len(HOSTILE)
    for i, text in enumerate(HOSTILE):
        row = got[f"b{i}"]
        assert (row["fileName"], row["message"], row["gpuIp"]) == (text, text, text)


def test_hostile_text_round_trips_in_both_backends(backend: tuple[str, str], spool_dir: str) -> None:
    dsn, table = backend
    _log_hostile(dsn, table, spool_dir)
    _check_hostile(dsn, table)


def test_hostile_text_round_trips_under_no_backslash_escapes(mysql_dsn: str, mysql_table: str,
                                                           spool_dir: str) -> None:
    """The server's quoting mode flips how a backslash is read; the statement builder follows it."""
    seen: list[bool] = []

    def no_backslash(conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
        seen.append(bool(conn.server_status & NO_BACKSLASH_ESCAPES))

    _log_hostile(mysql_dsn, mysql_table, spool_dir, on_connect=no_backslash)
    assert seen == [True]
    _check_hostile(mysql_dsn, mysql_table)
    with Database(mysql_dsn) as db:  # nothing else was created or dropped by the hostile text
        assert db.table_exists(mysql_table)


def test_statements_are_capped_by_bytes(mysql_dsn: str, mysql_table: str) -> None:
    sink = MySQLSink(parse_dsn(mysql_dsn), mysql_table, max_statement_bytes=20_000)
    rows = [_row(i, f"file-{i}-" + "z" * 100) for i in range(1000)]
    statements = sink.statements_for(rows)
    assert len(statements) > 10
    assert all(len(s) <= 20_000 for s in statements)
    sink.write(rows)
    sink.close()
    assert sink.statements == len(statements)
    assert len(rows_of(mysql_dsn, mysql_table)) == 1000


def test_a_row_over_the_cap_is_a_permanent_error(mysql_dsn: str, mysql_table: str) -> None:
    sink = MySQLSink(parse_dsn(mysql_dsn), mysql_table, max_statement_bytes=2_000)
    with pytest.raises(SinkError) as info:
        sink.write([_row(1, "w" * 5_000)])
    sink.close()
    assert info.value.transient is False and info.value.code == 1153


def test_rewriting_the_same_rows_is_harmless(backend: tuple[str, str]) -> None:
    """The eventId key, with duplicates skipped, is what makes a retried batch safe."""
    dsn, table = backend
    parsed = parse_dsn(dsn)
    sink = SQLiteSink(parsed.path, table) if parsed.dialect == "sqlite" else MySQLSink(parsed, table)
    rows = [_row(i, "same") for i in range(50)]
    sink.write(rows)
    sink.write(rows)
    sink.write(rows[10:20])
    sink.close()
    assert len(rows_of(dsn, table)) == 50


def test_wrong_password_never_shows_the_password(mysql_dsn: str, table_name: str, spool_dir: str) -> None:
    parsed = parse_dsn(mysql_dsn)
    secret = "s3cr3t-Pa55"
    dsn = f"mysql://nobody_here:{secret}@{parsed.host}:{parsed.port}/{parsed.database}"
    sink = MySQLSink(parse_dsn(dsn), table_name, timeout=3)
    with pytest.raises(SinkError) as info:
        sink.write([_row(1, "x")])
    assert info.value.transient  # a configuration fault: spool and retry, never dead-letter
    assert secret not in str(info.value) and "***" in str(info.value)
    log = EventLogger(dsn, table=table_name, spool_dir=spool_dir, timeout=3)
    log.file_error("b", "lid", "f.wav", "e")
    assert log.flush(10) is False
    stats = log.stats()
    log.close(timeout=5)
    assert secret not in repr(log) and secret not in repr(stats) and secret not in repr(parse_dsn(dsn))
    assert stats["last_error"] and "1045" in stats["last_error"]
    assert stats["unwritten"] == 1 and stats["dropped"] == 0


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    sink = SQLiteSink(str(path), "batchExecutionLog")
    sink.write([_row(1, "x")])
    sink.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite:///events.db", ("sqlite", "events.db")),
    ("sqlite:////var/tmp/e.db", ("sqlite", "/var/tmp/e.db")),
    ("mysql://u:p%40ss@db.example:3307/logs", ("mysql", "db.example", 3307, "u", "p@ss", "logs")),
    ("mariadb://u@h/d", ("mysql", "h", 3306, "u", "", "d")),
])
def test_dsn_parsing(url: str, expected: tuple[Any, ...]) -> None:
    dsn = parse_dsn(url)
    if dsn.dialect == "sqlite":
        assert (dsn.dialect, dsn.path) == expected
    else:
        assert (dsn.dialect, dsn.host, dsn.port, dsn.user, dsn.password, dsn.database) == expected
        assert "p@ss" not in repr(dsn) and "p@ss" not in str(dsn)


@pytest.mark.parametrize("url", ["postgres://x/y", "events.db", "mysql://h:port/d", "mysql://h:3306/", "sqlite://"])
def test_bad_dsn_is_a_clear_error(url: str) -> None:
    with pytest.raises(ValueError):
        parse_dsn(url)


def test_no_ddl_on_connect_when_the_table_exists(mysql_dsn: str, mysql_table: str) -> None:
    """On Galera even CREATE TABLE IF NOT EXISTS is a cluster-wide schema change: sent only when needed."""
    connections: list[Any] = []
    ddl: list[int] = []
    for i in range(2):
        sink = MySQLSink(parse_dsn(mysql_dsn), mysql_table, on_connect=connections.append)
        sink.write([_row(i, "ddl")])
        with connections[-1].cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Com_create_table'")
            ddl.append(int(cur.fetchone()[1]))
        sink.close()
    assert ddl == [1, 0]


def test_a_table_as_the_library_makes_it_needs_no_bounding(backend: tuple[str, str]) -> None:
    dsn, table = backend
    with Database(dsn) as db:
        db.create_events_table(table)
        ddl = create_table_sql(db.dialect, table)
        if db.dialect == "mysql":
            with db.conn.cursor() as cur:
                have = mysql_columns(cur, table)
        else:
            have = sqlite_columns(db.conn, table)
    assert Fitter.build(table, have, declared(db.dialect, ddl)) is None


def test_values_are_bounded_to_narrow_columns_and_marked() -> None:
    wanted = declared("mysql", create_table_sql("mysql", "t"))
    have = dict(wanted)
    have["gpuIp"] = describe("gpuIp", "varchar(15)", True, "utf8mb3")
    have["message"] = describe("message", "tinytext", True, "latin1")
    have["metadata"] = describe("metadata", "varchar(120)", False)
    have["total"] = describe("total", "smallint unsigned", True)
    fitter = Fitter.build("t", have, wanted)
    assert fitter is not None
    row = _row(1, "ok")
    row = (*row[:5], "€ ✓ " + "x" * 300, "fe80::1234:5678:9abc:def0 😀", row[7], -5, '{"p": "' + "y" * 200 + '"}',
           row[10])
    fitted = fitter.fit(row)
    assert fitted is not None
    message, gpu, total, metadata = (str(v) for v in (fitted[5], fitted[6], fitted[8], fitted[9]))
    assert gpu == "fe80::1234:5678"  # the emoji replaced, then cut: no room for the marker in 15 characters
    assert message.startswith("€ ? ") and len(message) == 255 and "truncated" in message  # latin1: a byte each
    assert total == "0"
    assert len(metadata) <= 120 and "coerced" in json.loads(metadata)  # still JSON, within 120, saying why
    assert fitter.fit(_row(2, "x")) is None  # a row that fits is left alone
    plain = fitter.fit((*_row(3, "x")[:9], None, _row(3, "x")[10]))
    assert plain is not None and json.loads(str(plain[9])) == {
        "coerced": ["metadata: no value, the column is NOT NULL; stored '{}'"]}


@pytest.mark.parametrize("no_backslash", [False, True])
def test_a_batch_of_every_shape_is_one_statement_and_reads_back_exactly(
        mysql_dsn: str, mysql_table: str, no_backslash: bool) -> None:
    """Columns NULL on every row, on none and on some; counts; hostile text among plain rows: the
    statement lists the columns in its own order, and every value lands where it belongs."""
    texts = ["plain", None, *HOSTILE]
    rows = [(os.urandom(16), f"b{i % 3}", texts[i % len(texts)], "progress" if i % 2 else "error",
             texts[(i + 1) % len(texts)], None, "10.0.0.7" if i % 4 else None, i if i % 3 else None, None,
             None if i % 5 else orjson.dumps({"t": texts[i % len(texts)], "i": i}).decode(),
             1_700_000_000_000_000 + i) for i in range(200)]
    sink = MySQLSink(parse_dsn(mysql_dsn), mysql_table)
    if no_backslash:
        with sink._connection().cursor() as cur:
            cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
    sink.write(rows)
    sink.close()
    assert sink.statements == 1
    stored = {r["eventId"]: r for r in rows_of(mysql_dsn, mysql_table)}
    for row in rows:
        got = stored[row[0]]
        assert tuple(got[c] for c in COLUMNS[1:10]) == row[1:10]
        assert got["createdAt"] == datetime(2023, 11, 14, 22, 13, 20) + timedelta(microseconds=row[10] % 1_000_000)
