"""`cofi-eventlog migrate` against real MariaDB and SQLite: backup, backfill exactly once, verify, drop."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import pytest
from conftest import count_of, rows_of

from cofi_eventlog.cli import main
from cofi_eventlog.database import Database
from cofi_eventlog.events import EventIds
from cofi_eventlog.tools.migrate.mapping import MARKER, MigrationError, migrated_event_id
from cofi_eventlog.tools.simulate.legacy import processing_logs_ddl

LEGACY_COLUMNS = ("call_id", "batch_id", "stage_name", "status", "error_message", "input_payload", "created_at")


class Names:
    """One migration's tables: the legacy source, its backup and the events table, all unique to a test."""

    def __init__(self, dsn: str, table: str) -> None:
        self.dsn = dsn
        self.target = table
        self.source = f"{table}_plog"
        self.backup = f"{self.source}_backup"

    def args(self, *extra: str) -> list[str]:
        return ["migrate", "--dsn", self.dsn, "--source-table", self.source, "--table", self.target, *extra]


@pytest.fixture
def names(backend: tuple[str, str]) -> Iterator[Names]:
    dsn, table = backend
    made = Names(dsn, table)
    yield made
    with Database(dsn) as db:
        for name in (made.source, made.backup, f"{made.backup}_partial"):
            db.execute(f"DROP TABLE IF EXISTS {db.name(name)}")


@pytest.fixture
def mysql_names(mysql_dsn: str, mysql_table: str) -> Iterator[Names]:
    made = Names(mysql_dsn, mysql_table)
    yield made
    with Database(mysql_dsn) as db:
        for name in (made.source, made.backup, f"{made.backup}_partial"):
            db.execute(f"DROP TABLE IF EXISTS {db.name(name)}")


def make_legacy(names: Names, rows: Sequence[Sequence[Any]], columns: Sequence[str] = LEGACY_COLUMNS,
                ddl: str | None = None) -> None:
    with Database(names.dsn) as db:
        db.execute(ddl or processing_logs_ddl(db.dialect, names.source))
        marks = ", ".join(["%s"] * len(columns))
        db.executemany(f"INSERT INTO {db.name(names.source)} ({', '.join(columns)}) VALUES ({marks})", rows)


def legacy_id(names: Names, call_id: str) -> int:
    """The id the database gave a legacy row: never assume 1, 2, 3 (Galera hands out 1, 4, 7, ...)."""
    with Database(names.dsn) as db:
        return int(db.scalar(f"SELECT id FROM {db.name(names.source)} WHERE call_id = %s", (call_id,)))


def legacy_rows(count: int, batches: int = 3) -> list[tuple[Any, ...]]:
    """A mix like the retired repository wrote: mostly successes, every tenth a failure, some odd payloads."""
    rows = []
    for i in range(count):
        failed = i % 10 == 0
        payload = json.dumps({"file": i, "model": "lid-v2"}) if i % 7 else f"raw payload {i} {{not json"
        created = f"2024-03-01 10:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}000"
        rows.append((f"call-{i:05d}.wav", f"batch-{i % batches}", ("lid", "llm1", "llm2")[i % 3],
                     "failed" if failed else "success", f"timeout on call {i}" if failed else None, payload,
                     created))
    return rows


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_done_when_3k_rows_on_mariadb(mysql_names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    names = mysql_names
    make_legacy(names, legacy_rows(3000))

    code, out, _ = run(capsys, names.args())
    assert code == 0, out
    assert "3000 new events" in out
    assert count_of(names.dsn, names.target) == 3000
    assert count_of(names.dsn, names.backup) == 3000
    assert "verification passed: 3 batches, 3000 rows" in out

    code, out, _ = run(capsys, names.args())
    assert code == 0
    assert "backup: skipped" in out
    assert "0 new events" in out and "3000 already there" in out
    assert count_of(names.dsn, names.target) == 3000

    done = subprocess.run([sys.executable, "-m", "cofi_eventlog", *names.args("--drop")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "verification passed" in done.stdout and f"dropped {names.source}" in done.stdout
    assert done.stdout.index("verification passed") < done.stdout.index("dropped")
    with Database(names.dsn) as db:
        assert not db.table_exists(names.source)
        assert db.table_exists(names.backup)
    assert count_of(names.dsn, names.backup) == 3000
    assert count_of(names.dsn, names.target) == 3000

    code, out, _ = run(capsys, names.args("--drop"))
    assert code == 0 and "nothing to migrate" in out and "is kept" in out


def test_each_column_maps_as_the_plan_says(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, [
        ("a.wav", "b1", "lid", "failed", "boom", '{"lang": "en", "n": 3}', "2024-03-01 10:00:00.250000"),
        ("b.wav", "b1", "llm1", "ERROR", "bad", "[1, 2]", "2024-03-01 10:00:01.000000"),
        ("c.wav", "b1", "llm2", "success", None, "not json at all", "2024-03-01 10:00:02.000000"),
        ("d.wav", "b2", "audit", "Success", None, None, "2024-03-01 10:00:03.000000"),
    ])
    code, out, _ = run(capsys, names.args("--quiet"))
    assert code == 0, out
    rows = rows_of(names.dsn, names.target)
    assert [r["fileName"] for r in rows] == ["a.wav", "b.wav", "c.wav", "d.wav"]
    assert [r["eventType"] for r in rows] == ["error", "error", "file_complete", "file_complete"]
    assert [r["stage"] for r in rows] == ["lid", "llm1", "llm2", "audit"]
    assert [r["batchId"] for r in rows] == ["b1", "b1", "b1", "b2"]
    assert [r["message"] for r in rows] == ["boom", "bad", None, None]
    meta = [None if r["metadata"] is None else json.loads(str(r["metadata"])) for r in rows]
    assert meta == [{"payload": {"lang": "en", "n": 3}}, {"payload": [1, 2]}, {"payload": "not json at all"}, None]
    assert "1 rows: input_payload is not JSON" in out
    created = [r["createdAt"] for r in rows]
    first = created[0] if isinstance(created[0], datetime) else datetime.fromisoformat(str(created[0]))
    assert first == datetime(2024, 3, 1, 10, 0, 0, 250000)
    for row in rows:
        assert isinstance(row["eventId"], bytes) and row["eventId"][8:12] == MARKER


def test_missing_optional_columns_are_assumed_and_said(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    with Database(names.dsn) as db:
        key = "INT NOT NULL AUTO_INCREMENT PRIMARY KEY" if db.dialect == "mysql" else "INTEGER PRIMARY KEY"
        ddl = (f"CREATE TABLE {db.name(names.source)} (id {key}, call_id VARCHAR(255), batch_id VARCHAR(64), "
               "stage_name VARCHAR(64), error_message TEXT)")
    make_legacy(names, [("a.wav", "b1", "lid", "boom"), ("b.wav", "b1", "lid", None), ("c.wav", "b1", "lid", "")],
                columns=("call_id", "batch_id", "stage_name", "error_message"), ddl=ddl)
    code, out, _ = run(capsys, names.args("--quiet"))
    assert code == 0, out
    assert "no status column" in out and "no created_at column" in out and "no input_payload column" in out
    rows = sorted(rows_of(names.dsn, names.target), key=lambda r: str(r["fileName"]))
    assert [r["eventType"] for r in rows] == ["error", "file_complete", "file_complete"]
    assert all(r["metadata"] is None for r in rows)
    # with no created_at the eventId still comes from the id alone, so a re-run adds nothing
    code, out, _ = run(capsys, names.args("--quiet"))
    assert code == 0 and "0 new events" in out
    assert count_of(names.dsn, names.target) == 3


def test_an_unknown_status_stops_before_anything_changes(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, [("a.wav", "b1", "lid", "retry", None, None, "2024-03-01 10:00:00"),
                        ("b.wav", "b1", "lid", "success", None, None, "2024-03-01 10:00:01")])
    code, _, err = run(capsys, names.args("--quiet"))
    assert code == 2
    assert "'retry'" in err and "--map-status" in err
    with Database(names.dsn) as db:
        assert not db.table_exists(names.backup)
        assert not db.table_exists(names.target)
    code, out, _ = run(capsys, names.args("--quiet", "--map-status", "retry=file_start"))
    assert code == 0, out
    assert sorted(str(r["eventType"]) for r in rows_of(names.dsn, names.target)) == ["file_complete", "file_start"]
    code, _, err = run(capsys, names.args("--map-status", "retry=bogus"))
    assert code == 2 and "EVENT_TYPE" in err


def test_dry_run_changes_nothing(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(40))
    code, out, _ = run(capsys, names.args("--dry-run", "--drop"))
    assert code == 0, out
    assert "would copy 40 rows" in out and "would create" in out and "about 40 would be written" in out
    assert f"would drop {names.source} if verification passed" in out
    with Database(names.dsn) as db:
        assert db.table_exists(names.source)
        assert not db.table_exists(names.backup)
        assert not db.table_exists(names.target)
    assert count_of(names.dsn, names.source) == 40


def test_backups_identical_are_kept_and_differing_are_refused(names: Names,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(30))
    with Database(names.dsn) as db:  # the plan's own backup statement, run by hand earlier
        db.execute(f"CREATE TABLE {db.name(names.backup)} AS SELECT * FROM {db.name(names.source)}")
    code, out, _ = run(capsys, names.args("--quiet"))
    assert code == 0, out
    assert "backup: skipped" in out

    with Database(names.dsn) as db:
        db.execute(f"UPDATE {db.name(names.backup)} SET error_message = 'edited' WHERE call_id = %s",
                   ("call-00003.wav",))
    code, out, err = run(capsys, names.args("--quiet", "--drop"))
    assert code == 1
    assert "contents differ" in err and "not overwritten" in err
    with Database(names.dsn) as db:
        assert db.table_exists(names.source)
        assert db.scalar(f"SELECT error_message FROM {db.name(names.backup)} WHERE call_id = %s",
                         ("call-00003.wav",)) == "edited"

    other = f"{names.source}_bk2"
    try:
        code, out, _ = run(capsys, names.args("--quiet", "--backup-table", other))
        assert code == 0 and f"copied 30 rows of {names.source} to {other}" in out
    finally:
        with Database(names.dsn) as db:
            db.execute(f"DROP TABLE IF EXISTS {db.name(other)}")


def test_failed_verification_keeps_the_legacy_table(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(30))
    assert run(capsys, names.args("--quiet"))[0] == 0
    with Database(names.dsn) as db:  # a legacy row edited after it was copied: its event keeps the old batch
        db.execute(f"UPDATE {db.name(names.source)} SET batch_id = 'batch-late' WHERE call_id = %s",
                   ("call-00001.wav",))
        db.execute(f"DROP TABLE {db.name(names.backup)}")
    code, out, err = run(capsys, names.args("--quiet", "--drop"))
    assert code == 1
    assert "MISMATCH" in out and "verification FAILED" in err
    with Database(names.dsn) as db:
        assert db.table_exists(names.source)


def test_chunks_and_progress_bar(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(50))
    code, out, err = run(capsys, names.args("--chunk-size", "7"))
    assert code == 0, out
    assert f"backfill {names.source} [" in err and "100% 50/50" in err
    assert count_of(names.dsn, names.target) == 50


def test_missing_source_and_incomplete_target(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, names.args())
    assert code == 0 and "nothing to migrate" in out
    make_legacy(names, legacy_rows(5))
    with Database(names.dsn) as db:
        db.execute(f"CREATE TABLE {db.name(names.target)} (batchId VARCHAR(10))")
    code, _, err = run(capsys, names.args("--quiet"))
    assert code == 1 and "init-db" in err
    assert count_of(names.dsn, names.target) == 0


def test_timestamps_are_read_in_utc(mysql_names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    names = mysql_names
    with Database(names.dsn) as db:
        db.execute(processing_logs_ddl("mysql", names.source))
        db.execute("SET time_zone = '+05:00'")
        db.execute(f"INSERT INTO {db.name(names.source)} (call_id, batch_id, stage_name, status, created_at) "
                   "VALUES ('a.wav', 'b1', 'lid', 'success', '2024-03-01 12:00:00.123456')")
    assert run(capsys, names.args("--quiet"))[0] == 0
    row = rows_of(names.dsn, names.target)[0]
    assert row["createdAt"] == datetime(2024, 3, 1, 7, 0, 0, 123456)
    expected_us = int(datetime(2024, 3, 1, 7, 0, 0, 123456, tzinfo=timezone.utc).timestamp()) * 10**6 + 123456
    assert row["eventId"] == migrated_event_id(legacy_id(names, "a.wav"), expected_us)


def test_a_value_too_long_for_the_events_table_is_a_clear_error(mysql_names: Names,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    names = mysql_names
    ddl = processing_logs_ddl("mysql", names.source).replace("`stage_name` VARCHAR(64)", "`stage_name` VARCHAR(200)")
    make_legacy(names, [("a.wav", "b1", "lid", "success", None, None, "2024-03-01 10:00:00"),
                        ("b.wav", "b1", "s" * 100, "success", None, None, "2024-03-01 10:00:01")], ddl=ddl)
    code, _, err = run(capsys, names.args("--quiet"))
    assert code == 2
    assert f"legacy row id={legacy_id(names, 'b.wav')}" in err and "stage" in err
    assert count_of(names.dsn, names.target) == 0  # the chunk holding it was not written, not even truncated


def test_migrated_ids_are_deterministic_ordered_and_apart_from_live_ids() -> None:
    t = 1_709_287_200_000_000
    assert migrated_event_id(42, t) == migrated_event_id(42, t)
    assert migrated_event_id(42, t) < migrated_event_id(7, t + 1) < migrated_event_id(1, t + 2)
    assert migrated_event_id(1, None)[:8] == bytes(8)
    live = EventIds()
    same_instant = live.make(t * 1000, 42)
    assert same_instant[:8] == migrated_event_id(42, t)[:8]  # same layout, same time prefix ...
    assert same_instant != migrated_event_id(42, t)  # ... told apart by the node (fails once in 2**32 runs)
    live._node = int.from_bytes(MARKER, "big") << 32  # the one way they could meet: a node drawn as b"PLOG"
    assert live.make(t * 1000, 42) == migrated_event_id(42, t)
    with pytest.raises(MigrationError):
        migrated_event_id(1 << 32, t)
