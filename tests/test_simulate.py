"""`cofi-eventlog simulate` against real MariaDB and SQLite: what the database counted, and nothing lost."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cofi_eventlog.cli import main
from cofi_eventlog.database import Database
from cofi_eventlog.tools.simulate.counting import MySQLCounter, SQLiteCounter, server_status
from cofi_eventlog.tools.simulate.legacy import processing_logs_ddl
from cofi_eventlog.tools.simulate.pipeline import STAGES, Plan
from cofi_eventlog.tools.simulate.sampler import micros, percentile

KEYS = {"events", "rows_inserted", "insert_statements", "wall_seconds", "caller_seconds", "lost"}


@pytest.fixture
def sqlite_dsn(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sim.db'}"


@pytest.fixture
def tables(table_name: str) -> tuple[str, str]:
    """(events table, legacy table), unique to the test."""
    return table_name, f"{table_name}_pl"


@pytest.fixture
def mysql_tables(mysql_dsn: str, tables: tuple[str, str]) -> Iterator[tuple[str, str]]:
    yield tables
    with Database(mysql_dsn) as db:
        for table in tables:
            db.execute(f"DROP TABLE IF EXISTS {db.name(table)}")


def simulate(capsys: pytest.CaptureFixture[str], dsn: str | None, tables: tuple[str, str] | None, *options: str,
             expect: int = 0) -> dict[str, Any]:
    argv = ["simulate", "--json", *options]
    if dsn is not None:
        argv += ["--dsn", dsn]
    if tables is not None:
        argv += ["--table", tables[0], "--legacy-table", tables[1]]
    assert main(argv) == expect
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def check_shapes(result: dict[str, Any], files: int, failure_rate: float = 0.01) -> int:
    """The counts every run must show; returns the number of events."""
    events = Plan.make(files, failure_rate).events()
    legacy, buffered = result["legacy"], result["buffered"]
    assert set(legacy) >= KEYS and set(buffered) >= KEYS
    assert legacy["events"] == events and buffered["events"] == events + 1  # + its batch_start (declared stages)
    assert legacy["rows_inserted"] == legacy["rows_found"] == 2 * events
    assert buffered["rows_inserted"] == buffered["rows_found"] == events + 1
    assert legacy["lost"] == buffered["lost"] == 0
    assert legacy["batch_id"] != buffered["batch_id"]
    return events


def test_plan_counts_two_events_per_file_and_stage_reached() -> None:
    plan = Plan.make(1000, 0.05)
    assert len(plan.failures) == 50
    assert all(0 <= stage < len(STAGES) for stage in plan.failures.values())
    reached = sum(plan.failures.get(i, len(STAGES) - 1) + 1 for i in range(1000))
    assert plan.events() == 2 * reached
    assert Plan.make(1000, 0.0).events() == 1000 * len(STAGES) * 2
    assert Plan.make(1000, 0.05).failures == plan.failures  # both shapes run the same batch


def test_sqlite_json_counts(capsys: pytest.CaptureFixture[str], sqlite_dsn: str, tables: tuple[str, str]) -> None:
    result = simulate(capsys, sqlite_dsn, tables, "--files", "300")
    events = check_shapes(result, 300)
    legacy, buffered = result["legacy"], result["buffered"]
    # SQLite steps a prepared INSERT once per row, executemany or not: statements follow rows there...
    assert legacy["insert_statements"] == 2 * events
    assert buffered["insert_statements"] == events + 1
    # ...and the saving is in commits: one per row before, one per batch of 1000 after
    assert legacy["transactions"] == 2 * events
    assert buffered["transactions"] <= events / 500
    assert buffered["writer"]["written"] == events + 1 and buffered["flushed"] is True


def test_sqlite_rows_carry_the_failures(capsys: pytest.CaptureFixture[str], sqlite_dsn: str,
                                        tables: tuple[str, str]) -> None:
    result = simulate(capsys, sqlite_dsn, tables, "--files", "200", "--failure-rate", "0.05")
    check_shapes(result, 200, 0.05)
    failures = len(Plan.make(200, 0.05).failures)
    with Database(sqlite_dsn) as db:
        events, legacy = db.name(tables[0]), db.name(tables[1])
        for shape in ("legacy", "buffered"):
            errors = db.fetchall(f"SELECT message, metadata FROM {events} WHERE batchId = %s AND eventType = 'error'",
                                 (result[shape]["batch_id"],))
            assert len(errors) == failures
            assert all(message.startswith("TimeoutError") for message, _ in errors)
        buffered_errors = db.fetchall(f"SELECT metadata FROM {events} WHERE batchId = %s AND eventType = 'error'",
                                      (result["buffered"]["batch_id"],))
        assert all(json.loads(meta)["payload"]["attempt"] == 1 for (meta,) in buffered_errors)
        statuses = dict(db.fetchall(f"SELECT status, COUNT(*) FROM {legacy} WHERE batch_id = %s GROUP BY status",
                                    (result["legacy"]["batch_id"],)))
        payloads = db.fetchall(f"SELECT input_payload FROM {legacy} WHERE batch_id = %s AND status = 'failure'",
                               (result["legacy"]["batch_id"],))
    assert statuses["failure"] == failures
    assert statuses["started"] == statuses["success"] + failures
    assert all(json.loads(p)["stage"] in STAGES for (p,) in payloads)


def test_sqlite_two_workers_and_a_rerun(capsys: pytest.CaptureFixture[str], sqlite_dsn: str,
                                        tables: tuple[str, str]) -> None:
    first = simulate(capsys, sqlite_dsn, tables, "--files", "150", "--workers", "2")
    events = check_shapes(first, 150)
    assert first["legacy"]["workers"] == first["buffered"]["workers"] == 2
    again = simulate(capsys, sqlite_dsn, tables, "--files", "150", "--workers", "2")  # same tables, new batch ids
    check_shapes(again, 150)
    assert again["buffered"]["batch_id"] != first["buffered"]["batch_id"]
    with Database(sqlite_dsn) as db:  # each run: a legacy and a buffered row per event, and a batch_start
        assert db.scalar(f"SELECT COUNT(*) FROM {db.name(tables[0])}") == 2 * (events + events) + 2


def test_mysql_both_shapes(capsys: pytest.CaptureFixture[str], mysql_dsn: str,
                           mysql_tables: tuple[str, str]) -> None:
    result = simulate(capsys, mysql_dsn, mysql_tables, "--files", "200")
    events = check_shapes(result, 200)
    legacy, buffered = result["legacy"], result["buffered"]
    assert legacy["insert_statements"] == 2 * events  # one single-row INSERT per row, counted by the server
    assert buffered["insert_statements"] <= events / 500
    for shape in (legacy, buffered):  # the server-wide deltas include ours, and maybe other sessions'
        assert shape["server_wide"]["Com_insert"] >= shape["insert_statements"]
        assert shape["server_wide"]["Handler_write"] >= shape["rows_inserted"]


def test_mysql_buffered_2000_files(capsys: pytest.CaptureFixture[str], mysql_dsn: str,
                                   mysql_tables: tuple[str, str]) -> None:
    result = simulate(capsys, mysql_dsn, mysql_tables, "--files", "2000", "--mode", "buffered")
    assert set(result) == {"buffered"}
    buffered = result["buffered"]
    events = Plan.make(2000, 0.01).events()
    assert buffered["events"] == buffered["rows_inserted"] == buffered["rows_found"] == events + 1  # + batch_start
    assert 0 < buffered["insert_statements"] <= events / 500
    assert buffered["lost"] == 0


def test_mysql_two_workers(capsys: pytest.CaptureFixture[str], mysql_dsn: str,
                           mysql_tables: tuple[str, str]) -> None:
    result = simulate(capsys, mysql_dsn, mysql_tables, "--files", "100", "--workers", "2")
    events = check_shapes(result, 100)
    assert result["legacy"]["insert_statements"] == 2 * events
    assert result["buffered"]["insert_statements"] <= 4  # each worker's writer: one INSERT per batch


def test_a_named_database_gets_tables_of_its_own(capsys: pytest.CaptureFixture[str], own_database: str) -> None:
    """Without --table / --legacy-table, the real tables are neither created nor written to."""
    dsn = own_database
    with Database(dsn) as db:
        db.create_events_table()  # the real events table, already holding production rows
        db.execute(f"INSERT INTO {db.name('batchExecutionLog')} (eventId, batchId, eventType, createdAt) "
                   "VALUES (%s, 'prod-1', 'file_start', '2026-01-01 00:00:00')", (b"p" * 16,))
    assert main(["simulate", "--dsn", dsn, "--files", "20"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[-2:] for line in out.splitlines() if line.startswith("events lost")] == [["0", "0"]]
    assert "made for this run and dropped after it" in out and "cofi_sim_" in out
    with Database(dsn) as db:
        assert db.scalar(f"SELECT COUNT(*) FROM {db.name('batchExecutionLog')}") == 1
        assert not db.table_exists("processing_logs")  # not re-created, as after `migrate --drop`
        if db.dialect == "mysql":
            left = db.fetchall("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
        else:
            left = db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'")
    assert [r[0] for r in left] == ["batchExecutionLog"]


def test_named_tables_are_used_and_kept(capsys: pytest.CaptureFixture[str], sqlite_dsn: str,
                                       tables: tuple[str, str]) -> None:
    result = simulate(capsys, sqlite_dsn, tables, "--files", "20")
    events = check_shapes(result, 20)
    with Database(sqlite_dsn) as db:
        assert db.scalar(f"SELECT COUNT(*) FROM {db.name(tables[0])}") == 2 * events + 1  # a row per shape and event
        assert db.scalar(f"SELECT COUNT(*) FROM {db.name(tables[1])}") == events  # the legacy shape's other row


def test_default_is_a_temporary_sqlite_and_prints_the_table(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("COFI_EVENTLOG_DSN", raising=False)
    assert main(["simulate", "--files", "40"]) == 0
    out = capsys.readouterr()
    assert "(temporary, deleted after the run)" in out.out
    lines = {line[:27].strip(): line[27:].split() for line in out.out.splitlines()}
    events = Plan.make(40, 0.01).events()
    assert lines["events"] == [f"{events:,}", f"{events + 1:,}"]  # buffered: + its batch_start
    assert lines["rows inserted"] == [f"{2 * events:,}", f"{events + 1:,}", "2.0×"]
    assert lines["events lost"] == ["0", "0"]
    assert "legacy: " in out.err and "buffered: " in out.err
    assert list(tmp_path.iterdir()) == []  # the temporary database is gone


@pytest.mark.parametrize("option", [["--files", "0"], ["--workers", "-1"], ["--failure-rate", "1.5"],
                                    ["--failure-rate", "nan"], ["--files", "many"], ["--mode", "fast"],
                                    ["--mode", "buffered,fast"], ["--file-seconds", "-1"],
                                    ["--flush-interval", "0"]])
def test_bad_options_are_refused(capsys: pytest.CaptureFixture[str], option: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate", *option])
    assert exc.value.code == 2
    assert option[0] in capsys.readouterr().err


def test_bad_table_name_is_a_clear_error(capsys: pytest.CaptureFixture[str], sqlite_dsn: str) -> None:
    assert main(["simulate", "--dsn", sqlite_dsn, "--legacy-table", "x; DROP TABLE y"]) == 2
    assert "plain identifier" in capsys.readouterr().err


def test_sqlite_counter_sees_rows_and_commits(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY)")
    counter = SQLiteCounter()
    counter.attach(conn)
    conn.execute("BEGIN")
    conn.executemany("INSERT OR IGNORE INTO t VALUES (?)", [(i,) for i in range(10)] + [(3,)])
    conn.execute("COMMIT")
    conn.execute("INSERT INTO t VALUES (100)")
    counter.before_close()
    conn.close()
    assert (counter.tally.statements, counter.tally.rows, counter.tally.transactions) == (12, 11, 2)


def test_mysql_counter_reads_the_session_as_it_closes(mysql_dsn: str, mysql_tables: tuple[str, str]) -> None:
    table = mysql_tables[1]
    counter = MySQLCounter()
    with Database(mysql_dsn) as db:
        db.execute(processing_logs_ddl("mysql", table))
        before = server_status(db)
        counter.attach(db.conn)
        db.execute(f"INSERT INTO {db.name(table)} (call_id, batch_id, stage_name, status) VALUES "
                   "('a', 'b', 'lid', 'started'), ('c', 'b', 'lid', 'started')")
        db.execute(f"INSERT INTO {db.name(table)} (call_id, batch_id, stage_name, status) VALUES "
                   "('d', 'b', 'lid', 'started')")
        assert counter.tally.statements == 0  # nothing is read before the close
        after = server_status(db)
    assert (counter.tally.statements, counter.tally.rows, counter.tally.unread) == (2, 3, 0)
    assert after["Com_insert"] - before["Com_insert"] >= 2


def test_unreachable_database_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--dsn", "mysql://root@127.0.0.1:1/test", "--files", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cofi-eventlog simulate: mysql error 2003")
    assert "Traceback" not in err


PACED = ["--files", "20", "--workers", "2", "--file-seconds", "0.01"]


def check_paced(shape: dict[str, Any], events: int) -> dict[str, Any]:
    """A paced shape that wrote its events: every row counted, found, and seen by the delay polls."""
    assert shape["events"] == shape["rows_found"] == events and shape["lost"] == 0
    paced: dict[str, Any] = shape["paced"]
    assert paced["file_seconds"] == 0.01 and paced["jitter"] == 0.5
    assert paced["statements_per_event"] == round(shape["insert_statements"] / events, 4)
    delay = paced["delay_seconds"]
    assert delay["rows_seen"] == events  # each row's delay, once: the polls and the final reading add up
    assert 0 <= delay["median"] <= delay["p99"] <= delay["max"]
    assert 0 <= delay["missed_by_polls"] <= events
    assert delay["rows_read"] >= events and delay["polls"] >= 1  # the final reading alone returns every row
    assert paced["worker_cpu_seconds"] > 0 and paced["worker_cpu_us_per_event_after_first_stage"] > 0
    assert paced["worker_cpu_us_per_event"] == pytest.approx(paced["worker_cpu_seconds"] / events * 1e6, abs=1)
    return paced


def test_sqlite_paced_run_measures_delay_and_cpu(capsys: pytest.CaptureFixture[str], sqlite_dsn: str,
                                                 tables: tuple[str, str]) -> None:
    result = simulate(capsys, sqlite_dsn, tables, *PACED, "--flush-interval", "0.2", "--mode", "buffered,unlogged")
    assert list(result) == ["buffered", "unlogged"]
    events = Plan.make(20, 0.01).events()
    buffered, unlogged = result["buffered"], result["unlogged"]
    assert buffered["rows_inserted"] == events and buffered["writer"]["written"] == events
    paced = check_paced(buffered, events)
    assert paced["flush_interval"] == 0.2
    assert 0 < paced["transactions_per_event"] <= 1 and "connections" not in paced  # SQLite: no server to ask
    # the same stages at the same pace, logging nothing: no rows, no delays, CPU of its own
    assert unlogged["events"] == events and unlogged["rows_inserted"] == unlogged["rows_found"] == 0
    assert unlogged["lost"] == 0 and "delay_seconds" not in unlogged["paced"]
    assert unlogged["paced"]["worker_cpu_seconds"] > 0
    with Database(sqlite_dsn) as db:
        assert db.scalar(f"SELECT COUNT(*) FROM {db.name(tables[0])}") == events


def test_mysql_paced_run_counts_connections(capsys: pytest.CaptureFixture[str], mysql_dsn: str,
                                            mysql_tables: tuple[str, str]) -> None:
    result = simulate(capsys, mysql_dsn, mysql_tables, *PACED, "--mode", "both")
    events = Plan.make(20, 0.01).events()
    legacy, buffered = result["legacy"], result["buffered"]
    assert buffered["rows_inserted"] == events and 0 < buffered["insert_statements"] <= events
    check_paced(buffered, events)
    opened = buffered["paced"]["connections"]
    assert opened["library_opened"] >= 1  # the writers' own; the parent's and the sampler's are not counted
    assert 0 <= opened["library_at_once_max"] <= opened["library_opened"]
    assert opened["server_threads_above_baseline_max"] >= 0
    # legacy: a single-row INSERT per row, into both tables; the delay is read from the events table
    assert legacy["rows_inserted"] == legacy["insert_statements"] == legacy["rows_found"] == 2 * events
    assert legacy["paced"]["statements_per_event"] == 2.0
    assert legacy["paced"]["delay_seconds"]["rows_seen"] == events
    # each legacy worker opens its two connections before the first call and holds them to the end
    held = legacy["paced"]["connections"]
    assert held["library_opened"] == held["library_at_once_max"] == 4


def test_paced_options_need_a_pace(capsys: pytest.CaptureFixture[str], sqlite_dsn: str) -> None:
    assert main(["simulate", "--dsn", sqlite_dsn, "--files", "10", "--flush-interval", "2"]) == 2
    assert "--flush-interval needs --file-seconds" in capsys.readouterr().err
    assert main(["simulate", "--dsn", sqlite_dsn, "--files", "10", "--mode", "unlogged"]) == 2
    assert "unlogged shape needs --file-seconds" in capsys.readouterr().err


def test_paced_table_in_text(capsys: pytest.CaptureFixture[str], sqlite_dsn: str, tables: tuple[str, str]) -> None:
    assert main(["simulate", "--dsn", sqlite_dsn, "--table", tables[0], *PACED, "--mode", "buffered"]) == 0
    out = capsys.readouterr().out
    assert "2 worker processes at 0.01 s ±50% per file and stage" in out
    lines = {line[:27].strip(): line[27:].split() for line in out.splitlines()}
    assert lines["events lost"] == ["0"]
    assert float(lines["delay to visible, median s"][0]) >= 0
    assert "legacy ÷ buffered" not in out


def test_sampler_reads_both_dialects_times() -> None:
    assert micros(datetime(1970, 1, 1, 0, 0, 1, 5)) == 1_000_005
    assert micros("2026-12-05 02:00:00.000001") == micros(datetime(2026, 12, 5, 2, 0, 0, 1)) == 1796436000000001
    assert percentile([1.0, 2.0, 3.0], 0.99) == 3.0 and percentile([1.0] * 99 + [9.0], 0.99) == 1.0
