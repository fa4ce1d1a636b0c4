"""`cofi-eventlog migrate` against real MariaDB and SQLite: backup, copy exactly once, check every row, drop."""

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
from cofi_eventlog.tools.migrate import backup as backups
from cofi_eventlog.tools.migrate.mapping import migrated_event_id, source_tag
from cofi_eventlog.tools.migrate.payload import Inexact, parse_exact
from cofi_eventlog.tools.simulate.legacy import processing_logs_ddl

LEGACY_COLUMNS = ("call_id", "batch_id", "stage_name", "status", "error_message", "input_payload", "created_at")


class Names:
    """One migration's tables: the legacy source, its backup and the events table, all unique to a test."""

    def __init__(self, dsn: str, table: str) -> None:
        self.dsn = dsn
        self.target = table
        self.source = f"{table}_plog"
        self.backup = f"{self.source}_backup"
        self.others: list[str] = []  # more tables a test makes, dropped with these

    def args(self, *extra: str, source: str | None = None) -> list[str]:
        return ["migrate", "--dsn", self.dsn, "--source-table", source or self.source, "--table", self.target,
                *extra]

    def other(self, suffix: str) -> str:
        self.others.append(f"{self.target}_{suffix}")
        return self.others[-1]

    def drop_all(self) -> None:
        with Database(self.dsn) as db:
            for name in (self.source, self.backup, *self.others):
                db.execute(f"DROP TABLE IF EXISTS {db.name(name)}")


@pytest.fixture
def names(backend: tuple[str, str]) -> Iterator[Names]:
    made = Names(*backend)
    yield made
    made.drop_all()


@pytest.fixture
def mysql_names(mysql_dsn: str, mysql_table: str) -> Iterator[Names]:
    made = Names(mysql_dsn, mysql_table)
    yield made
    made.drop_all()


def legacy_ddl(dialect: str, table: str, *, wide_dates: bool = False, case_insensitive: bool = False) -> str:
    """The retired table's DDL; ``wide_dates``: a DATETIME created_at (a TIMESTAMP stops at 2038);
    ``case_insensitive``: batch_id compares ignoring case, as MySQL's default collations do."""
    ddl = processing_logs_ddl(dialect, table)
    if wide_dates:
        ddl = ddl.replace("TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)", "DATETIME(6) NOT NULL")
    if case_insensitive:
        ddl = ddl.replace("`batch_id` VARCHAR(64) NOT NULL",
                          "`batch_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL")
        ddl = ddl.replace("batch_id TEXT NOT NULL", "batch_id TEXT NOT NULL COLLATE NOCASE")
    return ddl


def make_legacy(names: Names, rows: Sequence[Sequence[Any]], columns: Sequence[str] = LEGACY_COLUMNS,
                ddl: str | None = None, table: str | None = None) -> None:
    """The rows get ids 1, 2, 3, ... written out, so that the tests may name them on any server (Galera hands
    out AUTO_INCREMENT ids 1, 4, 7, ...)."""
    table = table or names.source
    if "id" not in columns:
        columns = ("id", *columns)
        rows = [(n, *row) for n, row in enumerate(rows, 1)]
    with Database(names.dsn) as db:
        db.execute(ddl or processing_logs_ddl(db.dialect, table))
        marks = ", ".join(["%s"] * len(columns))
        db.executemany(f"INSERT INTO {db.name(table)} ({', '.join(columns)}) VALUES ({marks})", rows)


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


def write_late(names: Names, legacy_id: int, call_id: str) -> None:
    """A row the old code writes after the backup was made."""
    with Database(names.dsn) as db:
        db.execute(f"INSERT INTO {db.name(names.source)} (id, call_id, batch_id, stage_name, status) "
                   "VALUES (%s, %s, 'batch-9', 'lid', 'failed')", (legacy_id, call_id))


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def metadata(row: dict[str, Any]) -> Any:
    return None if row["metadata"] is None else json.loads(str(row["metadata"]))


def by_file(dsn: str, table: str) -> dict[str, dict[str, Any]]:
    return {str(r["fileName"]): r for r in rows_of(dsn, table)}


def test_3000_rows_backup_copy_check_and_drop_on_mariadb(mysql_names: Names,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    names = mysql_names
    make_legacy(names, legacy_rows(3000))

    code, out, _ = run(capsys, names.args())
    assert code == 0, out
    assert "3,000 events written" in out
    assert count_of(names.dsn, names.target) == 3000
    assert count_of(names.dsn, names.backup) == 3000
    assert "check passed: all 3,000 rows" in out and "(3 batches)" in out

    code, out, _ = run(capsys, names.args())
    assert code == 0
    assert "backup: kept" in out
    assert "0 events written" in out and "3,000 already there" in out
    assert count_of(names.dsn, names.target) == 3000

    done = subprocess.run([sys.executable, "-m", "cofi_eventlog", *names.args("--drop")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "check passed" in done.stdout and f"dropped {names.source}" in done.stdout
    assert done.stdout.index("check passed") < done.stdout.index("dropped")
    with Database(names.dsn) as db:
        assert not db.table_exists(names.source)
        assert db.table_exists(names.backup)
    assert count_of(names.dsn, names.backup) == 3000
    assert count_of(names.dsn, names.target) == 3000

    code, out, _ = run(capsys, names.args("--drop"))
    assert code == 0 and "nothing to migrate" in out and "its backup" in out


def test_each_column_maps_to_its_event_column(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
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
    assert [metadata(r) for r in rows] == [
        {"payload": {"lang": "en", "n": 3}}, {"payload": [1, 2]},
        {"payload": "not json at all", "payload_text": "not JSON; kept as text"}, None]
    assert "1 row: input_payload kept as text: not JSON (legacy ids 3)" in out
    created = [r["createdAt"] for r in rows]
    first = created[0] if isinstance(created[0], datetime) else datetime.fromisoformat(str(created[0]))
    assert first == datetime(2024, 3, 1, 10, 0, 0, 250000)
    for row in rows:
        assert isinstance(row["eventId"], bytes) and row["eventId"][8:12] == source_tag(names.source)


def test_numbers_are_kept_exactly_as_written(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    payloads = {
        "big.wav": '{"id": 18446744073709551616}',
        "long-id.wav": '{"call": 123456789012345678901234567890}',
        "tiny.wav": '{"p": 1e-400}',
        "digits.wav": '{"score": 0.12345678901234567890123}',
        "twice.wav": '{"a": 1, "a": 2}',
        "fits.wav": '{"n": 18446744073709551615, "m": -9223372036854775808, "x": 1.5, "y": 1E2}',
    }
    make_legacy(names, [(f, "b1", "lid", "success", None, p, "2024-03-01 10:00:00") for f, p in payloads.items()])
    code, out, _ = run(capsys, names.args("--quiet"))
    assert code == 0, out
    events = by_file(names.dsn, names.target)
    for name in ("big.wav", "long-id.wav", "tiny.wav", "digits.wav", "twice.wav"):
        meta = metadata(events[name])
        assert meta["payload"] == payloads[name], name  # the text itself, not a bent number
        assert "kept as the original text" in meta["payload_text"], name
    assert "18446744073709551616, beyond 64 bits" in metadata(events["big.wav"])["payload_text"]
    assert "would hold as 0.0" in metadata(events["tiny.wav"])["payload_text"]
    assert 'the key "a" more than once' in metadata(events["twice.wav"])["payload_text"]
    fits = metadata(events["fits.wav"])
    assert fits == {"payload": {"n": 18446744073709551615, "m": -9223372036854775808, "x": 1.5, "y": 100.0}}
    assert "2 rows: input_payload kept as the original text: JSON holding an integer beyond 64 bits" in out
    assert "check passed: all 6 rows" in out


def test_dates_out_of_range_and_deep_payloads_are_carried(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    with Database(names.dsn) as db:
        ddl = legacy_ddl(db.dialect, names.source, wide_dates=True)
    deep = "[" * 35 + "]" * 35
    make_legacy(names, [("end.wav", "b1", "lid", "success", None, None, "9999-12-31 23:59:59.999999"),
                        ("moon.wav", "b1", "lid", "success", None, None, "1969-07-20 20:17:40"),
                        ("deep.wav", "b1", "lid", "failed", "boom", deep, "2024-03-01 10:00:00"),
                        ("ok.wav", "b1", "lid", "success", None, None, "2024-03-01 10:00:01")], ddl=ddl)
    code, out, err = run(capsys, names.args("--quiet", "--chunk-size", "2"))
    assert code == 0, out + err
    assert "Traceback" not in err
    events = by_file(names.dsn, names.target)
    assert str(events["end.wav"]["createdAt"]).startswith("9999-12-31 23:59:59.999999")
    assert str(events["moon.wav"]["createdAt"]).startswith("1969-07-20 20:17:40")
    assert events["end.wav"]["eventId"][:8] == b"\xff" * 8  # clamped: sorts after every live event
    assert events["moon.wav"]["eventId"][:8] == bytes(8)  # clamped: sorts before every live event
    deep_meta = metadata(events["deep.wav"])
    assert deep_meta["payload"] == deep and "nesting deeper than 30" in deep_meta["payload_text"]
    code, out, _ = run(capsys, names.args("--quiet"))
    assert code == 0 and "0 events written" in out and "4 already there" in out


def test_values_the_events_table_cannot_hold_are_bounded_and_said(names: Names,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with Database(names.dsn) as db:
        key = "INT NOT NULL AUTO_INCREMENT PRIMARY KEY" if db.dialect == "mysql" else "INTEGER PRIMARY KEY"
        blob = "LONGBLOB" if db.dialect == "mysql" else "BLOB"
        ddl = (f"CREATE TABLE {db.name(names.source)} (id {key}, call_id VARCHAR(255), batch_id VARCHAR(64) NULL, "
               f"stage_name VARCHAR(64), status VARCHAR(32), input_payload {blob}, created_at VARCHAR(32))")
    huge = "x" * (1 << 20) + '"'
    make_legacy(names, [("bin.wav", "b1", "lid", "success", b"\xff\xfe\x00raw", "2024-03-01 10:00:00"),
                        ("nobatch.wav", None, "lid", "success", None, "0000-00-00 00:00:00"),
                        ("huge.wav", "b1", "lid", "success", huge.encode(), "2024-03-01 10:00:02")],
                columns=("call_id", "batch_id", "stage_name", "status", "input_payload", "created_at"), ddl=ddl)
    code, out, err = run(capsys, names.args("--quiet"))
    assert code == 0, out + err
    events = by_file(names.dsn, names.target)
    assert metadata(events["bin.wav"]) == {"payload": "hex:fffe00726177",
                                           "payload_text": "bytes that are not UTF-8, kept as hex"}
    assert events["nobatch.wav"]["batchId"] == "unknown"
    assert str(events["nobatch.wav"]["createdAt"]).startswith("1970-01-01 00:00:00")
    assert metadata(events["nobatch.wav"])["coerced"] == [
        "created_at '0000-00-00 00:00:00' is not a date; createdAt is 1970-01-01",
        "batch_id is NULL; batchId is 'unknown'"]
    cut = metadata(events["huge.wav"])
    assert len(cut["payload"].encode()) <= 128 * 1024 and cut["payload"].endswith("chars]")
    assert "cut to 131072 bytes to fit the metadata bound" in cut["coerced"][0]
    assert "1 row: input_payload cut to the metadata bound (legacy ids 3)" in out


def test_batch_ids_are_compared_exactly_under_a_case_insensitive_collation(
        names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    with Database(names.dsn) as db:
        ddl = legacy_ddl(db.dialect, names.source, case_insensitive=True)
    make_legacy(names, [("a.wav", "Batch-A", "lid", "success", None, None, "2024-03-01 10:00:00"),
                        ("b.wav", "batch-a", "lid", "failed", "x", None, "2024-03-01 10:00:01"),
                        ("c.wav", "batch-a", "lid", "success", None, None, "2024-03-01 10:00:02")], ddl=ddl)
    with Database(names.dsn) as db:  # the legacy table itself cannot tell them apart
        assert db.scalar(f"SELECT COUNT(*) FROM {db.name(names.source)} WHERE batch_id = 'batch-a'") == 3
    code, out, err = run(capsys, names.args("--quiet", "--drop"))
    assert code == 0, out + err
    assert "MISSING" not in out and f"dropped {names.source}" in out
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  Batch-A")
             or line.startswith("  batch-a")}
    assert table == {"Batch-A": ["1", "1", "0"], "batch-a": ["2", "2", "1"]}
    assert sorted(str(r["batchId"]) for r in rows_of(names.dsn, names.target)) == ["Batch-A", "batch-a", "batch-a"]


def test_a_second_source_table_with_equal_ids_and_times(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    rows = legacy_rows(40, batches=2)
    make_legacy(names, rows)
    second = names.other("host2")
    with Database(names.dsn) as db:
        make_legacy(names, [(f"h2-{r[0]}", *r[1:]) for r in rows], ddl=processing_logs_ddl(db.dialect, second),
                    table=second)
    assert run(capsys, names.args("--quiet"))[0] == 0
    code, out, err = run(capsys, names.args("--quiet", "--backup-table", names.other("h2bk"), source=second))
    assert code == 0, out + err
    assert "40 events written" in out
    assert count_of(names.dsn, names.target) == 80
    for source, backup in ((names.source, names.backup), (second, names.others[1])):  # neither fails ...
        code, out, err = run(capsys, names.args("--quiet", "--backup-table", backup, source=source))
        assert code == 0 and "check passed: all 40 rows" in out, out + err  # ... for the other's events
    code, out, _ = run(capsys, names.args("--quiet", "--drop"))
    assert code == 0 and f"dropped {names.source}" in out
    with Database(names.dsn) as db:
        tags = {bytes(r[0]) for r in db.fetchall(f"SELECT SUBSTR(eventId, 9, 4) FROM {db.name(names.target)}")}
    assert tags == {source_tag(names.source), source_tag(second)}


def test_a_backup_that_is_the_source_is_refused(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(10))
    for backup in (names.source, names.source.upper(), names.target):
        code, _, err = run(capsys, names.args("--quiet", "--drop", "--backup-table", backup))
        assert code == 2 and "three different tables" in err and "nothing was changed" in err, err
    code, _, err = run(capsys, names.args("--quiet", "--table", names.source))
    assert code == 2 and "three different tables" in err
    assert count_of(names.dsn, names.source) == 10
    with Database(names.dsn) as db:
        assert not db.table_exists(names.target)


def test_long_backup_names_and_a_temporary_name_that_cannot_collide(names: Names,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(10))
    longest = names.other("b" * (63 - len(names.target)))
    assert len(longest) == 64
    code, out, err = run(capsys, names.args("--quiet", "--backup-table", longest))
    assert code == 0 and f"copied 10 rows of {names.source} to {longest}" in out, err
    # a 60-character backup name: the temporary name must not be cut into one that already exists
    sixty = names.other("c" * (59 - len(names.target)))
    bystander = names.other("c" * (59 - len(names.target)) + "_par")
    assert len(sixty) == 60 and bystander == f"{sixty}_partial"[:64]
    with Database(names.dsn) as db:
        db.execute(f"CREATE TABLE {db.name(bystander)} (keep INTEGER)")
        db.execute(f"INSERT INTO {db.name(bystander)} VALUES (42)")
    code, out, err = run(capsys, names.args("--quiet", "--backup-table", sixty))
    assert code == 0 and f"to {sixty}" in out, err
    with Database(names.dsn) as db:
        assert db.scalar(f"SELECT keep FROM {db.name(bystander)}") == 42
        if db.dialect == "mysql":
            left = db.scalar("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                             "AND table_name LIKE %s", (f"{sixty[:40]}%partial%",))
        else:
            left = db.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE %s", (f"{sixty[:40]}%partial%",))
    assert left == 0
    code, _, err = run(capsys, names.args("--quiet", "--source-table", "s" * 60))
    assert code == 2 and "pass a shorter --backup-table" in err


def test_a_late_writer_is_explained_and_nothing_is_dropped(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(30))
    assert run(capsys, names.args("--quiet"))[0] == 0
    write_late(names, 31, "late.wav")
    code, _, err = run(capsys, names.args("--quiet", "--drop"))
    assert code == 1
    assert f"1 row of {names.source} (id 31) is not in {names.backup}" in err
    assert "written after the backup was made" in err and "still logs to" in err
    assert f"--backup-table {names.backup}_2" in err and f"{names.backup} was left as it is" in err
    assert count_of(names.dsn, names.source) == 31 and count_of(names.dsn, names.backup) == 30
    with Database(names.dsn) as db:
        db.execute(f"UPDATE {db.name(names.source)} SET error_message = 'edited' WHERE id = 3")
    code, _, err = run(capsys, names.args("--quiet"))
    assert code == 1 and "(id 3) differs from its copy in the backup" in err


def test_the_drop_checks_the_backup_again_under_a_lock(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(12))
    assert run(capsys, names.args("--quiet"))[0] == 0
    write_late(names, 13, "x.wav")
    with Database(names.dsn) as db:
        state = backups.drop_if_covered(db, names.source, names.backup, 5)
        assert not state.covers and state.counts["missing"] == 1 and state.missing == [13]
        assert db.table_exists(names.source)
        db.execute(f"DELETE FROM {db.name(names.source)} WHERE id = 13")
        assert backups.drop_if_covered(db, names.source, names.backup, 5).covers
        assert not db.table_exists(names.source)


def test_a_purged_legacy_row_does_not_fail_the_check(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(20))
    assert run(capsys, names.args("--quiet"))[0] == 0
    with Database(names.dsn) as db:
        db.execute(f"DELETE FROM {db.name(names.source)} WHERE id IN (4, 5)")
    code, out, err = run(capsys, names.args("--quiet", "--drop"))
    assert code == 0, out + err
    assert "and 2 rows since deleted from the legacy table (ids 4, 5)" in out
    assert "check passed: all 18 rows" in out and f"dropped {names.source}" in out
    assert count_of(names.dsn, names.backup) == 20 and count_of(names.dsn, names.target) == 20


def test_a_row_that_cannot_be_carried_is_reported_and_the_rest_copied(names: Names,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(10))
    with Database(names.dsn) as db:
        db.execute(f"INSERT INTO {db.name(names.source)} (id, call_id, batch_id, stage_name, status, created_at) "
                   "VALUES (-7, 'neg.wav', 'batch-1', 'lid', 'success', '2024-03-01 11:00:00')")
    for _ in range(2):  # and the re-run does not stop at the same row
        code, out, err = run(capsys, names.args("--quiet", "--drop"))
        assert code == 1
        assert "legacy row id=-7 (batch batch-1): id -7 does not fit the 4 bytes" in err
        assert "was not dropped" in err and f"correct them in {names.source}" in err
        assert "MISSING OR DIFFERENT" in out
        assert count_of(names.dsn, names.target) == 10
    with Database(names.dsn) as db:
        db.execute(f"DELETE FROM {db.name(names.source)} WHERE id = -7")
    code, out, err = run(capsys, names.args("--quiet", "--drop"))
    assert code == 0, err
    assert "since deleted from the legacy table (id -7)" in out and f"dropped {names.source}" in out


def test_an_edited_legacy_row_is_found_and_the_way_out_works(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(30))
    assert run(capsys, names.args("--quiet"))[0] == 0
    with Database(names.dsn) as db:  # a legacy row edited after it was copied, and a fresh backup made
        db.execute(f"UPDATE {db.name(names.source)} SET batch_id = 'batch-late' WHERE id = 1")
        db.execute(f"DROP TABLE {db.name(names.backup)}")
    code, out, err = run(capsys, names.args("--quiet", "--drop"))
    assert code == 1
    stale = migrated_event_id(source_tag(names.source), 1, datetime(2024, 3, 1, 10, 0, 0))
    assert f"legacy row id=1 (batch batch-late): its event X'{stale.hex()}' differs in batchId" in err
    assert "batch-late" in out and "MISSING OR DIFFERENT" in out
    with Database(names.dsn) as db:
        assert db.table_exists(names.source)
        db.execute(f"DELETE FROM {db.name(names.target)} WHERE eventId = %s", (stale,))
    code, out, err = run(capsys, names.args("--quiet", "--drop"))
    assert code == 0, err
    assert "1 event written" in out and f"dropped {names.source}" in out


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
    assert all(str(r["createdAt"]).startswith("1970-01-01 00:00:00") for r in rows)
    code, out, _ = run(capsys, names.args("--quiet"))  # the eventId comes from the id alone: nothing added
    assert code == 0 and "0 events written" in out
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


def test_ids_that_cannot_name_rows_stop_before_anything_changes(names: Names,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    with Database(names.dsn) as db:
        db.execute(f"CREATE TABLE {db.name(names.source)} (id INTEGER, call_id VARCHAR(9), batch_id VARCHAR(9), "
                   "stage_name VARCHAR(9))")
        db.execute(f"INSERT INTO {db.name(names.source)} VALUES (1, 'a', 'b', 'lid'), (1, 'c', 'b', 'lid'), "
                   "(NULL, 'd', 'b', 'lid')")
    code, _, err = run(capsys, names.args("--quiet"))
    assert code == 2 and "1 rows have no id and 1 repeat an id" in err
    with Database(names.dsn) as db:
        assert not db.table_exists(names.backup)


def test_dry_run_changes_nothing(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(40))
    code, out, _ = run(capsys, names.args("--dry-run", "--drop", "--quiet"))
    assert code == 0, out
    assert "would copy 40 rows" in out and "would create" in out and "would write 40 events" in out
    assert f"would drop {names.source} if every row has its event" in out
    with Database(names.dsn) as db:
        assert db.table_exists(names.source)
        assert not db.table_exists(names.backup)
        assert not db.table_exists(names.target)
    assert count_of(names.dsn, names.source) == 40


def test_a_hand_made_backup_is_kept_and_a_differing_one_refused(names: Names,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(30))
    with Database(names.dsn) as db:  # the backup statement an operator may have run by hand
        db.execute(f"CREATE TABLE {db.name(names.backup)} AS SELECT * FROM {db.name(names.source)}")
    code, out, _ = run(capsys, names.args("--quiet"))
    assert code == 0, out
    assert "backup: kept" in out

    with Database(names.dsn) as db:
        db.execute(f"UPDATE {db.name(names.backup)} SET error_message = 'edited' WHERE id = 3")
    code, out, err = run(capsys, names.args("--quiet", "--drop"))
    assert code == 1 and "(id 3) differs from its copy" in err
    with Database(names.dsn) as db:
        assert db.table_exists(names.source)
        assert db.scalar(f"SELECT error_message FROM {db.name(names.backup)} WHERE id = 3") == "edited"
    other = names.other("bk2")
    code, out, _ = run(capsys, names.args("--quiet", "--backup-table", other))
    assert code == 0 and f"copied 30 rows of {names.source} to {other}" in out


def test_chunks_and_progress_bar(names: Names, capsys: pytest.CaptureFixture[str]) -> None:
    make_legacy(names, legacy_rows(50))
    code, out, err = run(capsys, names.args("--chunk-size", "7"))
    assert code == 0, out
    assert f"copy {names.source} [" in err and "100% 50/50" in err
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
        db.execute(f"INSERT INTO {db.name(names.source)} (id, call_id, batch_id, stage_name, status, created_at) "
                   "VALUES (1, 'a.wav', 'b1', 'lid', 'success', '2024-03-01 12:00:00.123456')")
    assert run(capsys, names.args("--quiet"))[0] == 0
    row = rows_of(names.dsn, names.target)[0]
    assert row["createdAt"] == datetime(2024, 3, 1, 7, 0, 0, 123456)
    moment = datetime(2024, 3, 1, 7, 0, 0, 123456, tzinfo=timezone.utc).replace(tzinfo=None)
    assert row["eventId"] == migrated_event_id(source_tag(names.source), 1, moment)


def test_a_value_too_long_for_the_events_table_is_cut_and_said(mysql_names: Names,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    names = mysql_names
    ddl = processing_logs_ddl("mysql", names.source).replace("`stage_name` VARCHAR(64)", "`stage_name` VARCHAR(200)")
    make_legacy(names, [("a.wav", "b1", "lid", "success", None, None, "2024-03-01 10:00:00"),
                        ("b.wav", "b1", "s" * 100, "success", None, None, "2024-03-01 10:00:01")], ddl=ddl)
    code, out, err = run(capsys, names.args("--quiet"))
    assert code == 0, err
    assert "1 row: stage cut to fit its column (legacy ids 2)" in out
    row = by_file(names.dsn, names.target)["b.wav"]
    head, _, marker = str(row["stage"]).partition("…[truncated ")
    assert len(str(row["stage"])) <= 64 and head == "s" * len(head) and marker == f"{100 - len(head)} chars]"
    assert metadata(row)["coerced"] == ["stage: 100 characters (100 bytes), cut to 64; legacy row 2 holds the "
                                        "whole value"]


def test_migrated_ids_are_deterministic_ordered_and_apart_from_live_ids() -> None:
    t = datetime(2024, 3, 1, 10, 0, 0)
    tag = source_tag("processing_logs")
    assert tag == b"PLOG" and source_tag("Processing_Logs") == b"PLOG"
    assert source_tag("processing_logs_host2") not in (tag, source_tag("processing_logs_host3"))
    assert migrated_event_id(tag, 42, t) == migrated_event_id(tag, 42, t)
    later = datetime(2024, 3, 1, 10, 0, 0, 1)
    assert migrated_event_id(tag, 42, t) < migrated_event_id(tag, 7, later)
    assert migrated_event_id(tag, 1, None)[:8] == bytes(8)
    live = EventIds()
    ns = 1_709_287_200 * 10**9
    assert live.make(ns, 42)[:8] == migrated_event_id(tag, 42, t)[:8]  # same layout, same time prefix ...
    assert live.make(ns, 42) != migrated_event_id(tag, 42, t)  # ... told apart by the node (fails once in 2**32)
    live._node = int.from_bytes(tag, "big") << 32  # the one way they could meet: a node drawn as the tag
    assert live.make(ns, 42) == migrated_event_id(tag, 42, t)
    with pytest.raises(ValueError):
        migrated_event_id(tag, 1 << 32, t)


@pytest.mark.parametrize("text, kind", [
    ("18446744073709551616", "an integer beyond 64 bits"), ("-9223372036854775809", "an integer beyond 64 bits"),
    ("1" * 5000, "an integer beyond 64 bits"), ("1e-400", "a number a double cannot hold exactly"),
    ("1e400", "a number a double cannot hold exactly"), ("0.1000000000000000055511", "a number a double cannot "
                                                                                      "hold exactly"),
    ('{"a": {"b": 1, "b": 1}}', "a repeated key"), ("[" * 31 + "]" * 31, "nesting deeper than 30"),
    ("[" * 100_000 + "]" * 100_000, "nesting deeper than 30")])
def test_json_that_would_change_is_refused(text: str, kind: str) -> None:
    with pytest.raises(Inexact) as exc:
        parse_exact(text)
    assert exc.value.kind.startswith(kind)


@pytest.mark.parametrize("text, value", [
    ("18446744073709551615", 18446744073709551615), ("0.1", 0.1), ("1.50", 1.5), ("-0.0", -0.0),
    ('{"a": [1, {"b": null}]}', {"a": [1, {"b": None}]}), ("[" * 30 + "]" * 30, "30 deep")])
def test_json_that_holds_its_values_is_parsed(text: str, value: Any) -> None:
    if value == "30 deep":
        value = []
        for _ in range(29):
            value = [value]
    assert parse_exact(text) == value


def test_text_that_is_not_json_is_refused_as_not_json() -> None:
    for text in ("NaN", "[Infinity]", "{'a': 1}", "raw text", ""):
        with pytest.raises(ValueError) as exc:
            parse_exact(text)
        assert not isinstance(exc.value, Inexact), text
