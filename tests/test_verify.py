"""`cofi-eventlog verify`: a test batch is in batchExecutionLog, and processing_logs got nothing new for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cofi_eventlog import EventLogger
from cofi_eventlog.cli import main
from cofi_eventlog.database import Database
from cofi_eventlog.tools.simulate.legacy import processing_logs_ddl


@pytest.fixture
def deployed(backend: tuple[str, str]) -> Iterator[tuple[str, str, str]]:
    """(dsn, events table, legacy table): a 10-file test batch logged by the new code, two files failing."""
    dsn, table = backend
    legacy = f"{table}_plog"
    with EventLogger(dsn, table=table) as log:
        log.batch_started("test-10", total_files=10)
        for i in range(10):
            log.file_started("test-10", "lid", f"f{i}.wav", "10.0.0.1")
            if i in (3, 7):
                log.file_error("test-10", "lid", f"f{i}.wav", "decode failed", "10.0.0.1")
            else:
                log.file_completed("test-10", "lid", f"f{i}.wav", "10.0.0.1")
        log.batch_completed("test-10")
        assert log.flush(10)
    yield dsn, table, legacy
    with Database(dsn) as db:
        db.execute(f"DROP TABLE IF EXISTS {db.name(legacy)}")


def verify(capsys: pytest.CaptureFixture[str], dsn: str, table: str, legacy: str, batch: str,
           *extra: str) -> tuple[int, dict[str, object]]:
    code = main(["verify", "--dsn", dsn, "--batch", batch, "--table", table, "--legacy-table", legacy, "--json",
                 *extra])
    return code, json.loads(capsys.readouterr().out)


def legacy_rows(dsn: str, legacy: str, rows: list[tuple[str, str]], *, case_insensitive: bool = False) -> None:
    """(batch_id, created_at) rows in a processing_logs table, made if missing."""
    with Database(dsn) as db:
        ddl = processing_logs_ddl(db.dialect, legacy)
        if case_insensitive:
            ddl = ddl.replace("`batch_id` VARCHAR(64) NOT NULL", "`batch_id` VARCHAR(64) COLLATE utf8mb4_general_ci "
                                                                 "NOT NULL")
            ddl = ddl.replace("batch_id TEXT NOT NULL", "batch_id TEXT NOT NULL COLLATE NOCASE")
        db.execute(ddl)
        db.executemany(f"INSERT INTO {db.name(legacy)} (call_id, batch_id, stage_name, status, created_at) "
                       "VALUES ('a.wav', %s, 'lid', 'failed', %s)", rows)


def test_passes_when_only_the_events_table_has_the_batch(deployed: tuple[str, str, str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table, legacy = deployed
    code, result = verify(capsys, dsn, table, legacy, "test-10", "--expect-errors")
    assert code == 0, result
    assert result["error_events"] == 2
    assert result["legacy_exists"] is False
    assert result["events"] == {"batch_start": 1, "file_start": 10, "error": 2, "file_complete": 8,
                                "batch_complete": 1}
    assert f"{legacy} is not in this database, so nothing writes to it" in result["findings"]  # type: ignore[operator]

    legacy_rows(dsn, legacy, [("older-batch", "2024-03-01 10:00:00")])  # there, but nothing of this batch
    code, result = verify(capsys, dsn, table, legacy, "test-10")
    assert code == 0 and result["legacy_rows"] == 0

    assert main(["verify", "--dsn", dsn, "--batch", "test-10", "--table", table, "--legacy-table", legacy]) == 0
    out = capsys.readouterr().out
    assert f"{table} holds 22 events of batch test-10 (batch_complete 1, batch_start 1, error 2, file_complete 8, " \
           "file_start 10)" in out
    assert "2 of them are error events" in out
    assert f"{legacy} holds no rows of batch test-10: nothing wrote there for it" in out
    for query in (f"SELECT eventType, COUNT(*) FROM {table} WHERE batchId = 'test-10' GROUP BY eventType;",
                  f"SELECT COUNT(*) FROM {table} WHERE eventType = 'error' AND batchId = 'test-10';",
                  f"SELECT COUNT(*) FROM {legacy} WHERE batch_id = 'test-10';"):
        assert f"  {query}" in out.splitlines()
    assert "query 1" not in out and "plan" not in out and "no longer exists" not in out
    assert out.rstrip().endswith("passed")


def test_history_is_told_apart_from_new_writes(deployed: tuple[str, str, str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table, legacy = deployed
    legacy_rows(dsn, legacy, [("test-10", "2024-03-01 10:00:00"), ("test-10", "2024-03-01 10:00:05")])
    code, result = verify(capsys, dsn, table, legacy, "test-10")  # without --since it cannot know
    assert code == 1
    assert "created 2024-03-01 10:00:00 to 2024-03-01 10:00:05 UTC" in str(result["problems"])
    assert "pass --since" in str(result["problems"])

    code, result = verify(capsys, dsn, table, legacy, "test-10", "--since", "2024-04-01 00:00")
    assert code == 0, result
    assert (result["legacy_rows"], result["legacy_history_rows"], result["legacy_new_rows"]) == (2, 2, 0)
    assert "history, not new writes" in str(result["findings"])

    legacy_rows(dsn, legacy, [("test-10", "2024-04-02 08:00:00")])
    code, result = verify(capsys, dsn, table, legacy, "test-10", "--since", "2024-04-01 00:00")
    assert code == 1
    assert (result["legacy_history_rows"], result["legacy_new_rows"]) == (2, 1)
    assert f"{legacy} received 1 row of batch test-10 at or after 2024-04-01 00:00:00" in str(result["problems"])
    assert "something still writes" in str(result["problems"])
    assert "AND created_at >= '2024-04-01 00:00:00'" in str(result["queries"])


def test_batch_ids_are_compared_exactly(deployed: tuple[str, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table, legacy = deployed
    legacy_rows(dsn, legacy, [("TEST-10", "2026-01-01 00:00:00")], case_insensitive=True)
    with EventLogger(dsn, table=table) as log:
        log.file_completed("Test-10", "lid", "other.wav")
    code, result = verify(capsys, dsn, table, legacy, "test-10")
    assert code == 0, result
    assert result["legacy_rows"] == 0
    assert sum(result["events"].values()) == 22  # type: ignore[attr-defined]
    assert f"{legacy}'s collation also matches 1 row of other batch ids" in str(result["findings"])


def test_fails_without_events_or_without_expected_errors(deployed: tuple[str, str, str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table, legacy = deployed
    code, result = verify(capsys, dsn, table, legacy, "never-ran")
    assert code == 1 and "holds no events of batch never-ran" in str(result["problems"])
    with EventLogger(dsn, table=table) as log:
        log.file_completed("clean-run", "lid", "a.wav")
    code, result = verify(capsys, dsn, table, legacy, "clean-run")
    assert code == 0
    assert "1 event of batch clean-run" in str(result["findings"]) and "0 of them are error events" in \
        str(result["findings"])
    code, result = verify(capsys, dsn, table, legacy, "clean-run", "--expect-errors")
    assert code == 1 and "no error events" in str(result["problems"])


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.db"
    assert main(["verify", "--dsn", f"sqlite:///{path}", "--batch", "x"]) == 2
    assert "no database" in capsys.readouterr().err
    assert not path.exists()
    with pytest.raises(SystemExit):
        main(["verify", "--dsn", f"sqlite:///{path}", "--batch", "x", "--since", "last tuesday"])
    assert "not a date and time" in capsys.readouterr().err
