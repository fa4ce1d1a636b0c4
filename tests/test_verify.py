"""`cofi-eventlog verify`: the plan's post-deployment queries for a test batch."""

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


def test_passes_when_only_the_events_table_has_the_batch(deployed: tuple[str, str, str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table, legacy = deployed
    code, result = verify(capsys, dsn, table, legacy, "test-10", "--expect-errors")
    assert code == 0, result
    assert result["error_events"] == 2
    assert result["legacy_exists"] is False
    assert result["events"] == {"batch_start": 1, "file_start": 10, "error": 2, "file_complete": 8,
                                "batch_complete": 1}

    with Database(dsn) as db:  # the legacy table still there, but nothing new in it
        db.execute(processing_logs_ddl(db.dialect, legacy))
        db.execute(f"INSERT INTO {db.name(legacy)} (call_id, batch_id, stage_name, status) "
                   "VALUES ('old.wav', 'older-batch', 'lid', 'failed')")
    code, result = verify(capsys, dsn, table, legacy, "test-10")
    assert code == 0 and result["legacy_rows"] == 0

    assert main(["verify", "--dsn", dsn, "--batch", "test-10", "--table", table, "--legacy-table", legacy]) == 0
    out = capsys.readouterr().out
    assert "query 1, error events" in out and ": 2" in out and "should be 0" in out and "passed" in out


def test_fails_when_the_legacy_table_still_receives_rows(deployed: tuple[str, str, str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table, legacy = deployed
    with Database(dsn) as db:
        db.execute(processing_logs_ddl(db.dialect, legacy))
        db.execute(f"INSERT INTO {db.name(legacy)} (call_id, batch_id, stage_name, status) "
                   "VALUES ('f3.wav', 'test-10', 'lid', 'failed')")
    code, result = verify(capsys, dsn, table, legacy, "test-10")
    assert code == 1
    assert result["legacy_rows"] == 1
    assert "still writes" in str(result["problems"])


def test_fails_without_events_or_without_expected_errors(deployed: tuple[str, str, str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table, legacy = deployed
    code, result = verify(capsys, dsn, table, legacy, "never-ran")
    assert code == 1 and "no events" in str(result["problems"])
    with EventLogger(dsn, table=table) as log:
        log.file_completed("clean-run", "lid", "a.wav")
    code, result = verify(capsys, dsn, table, legacy, "clean-run")
    assert code == 0
    code, result = verify(capsys, dsn, table, legacy, "clean-run", "--expect-errors")
    assert code == 1 and "no error events" in str(result["problems"])


def test_a_missing_sqlite_file_is_an_error_not_a_new_database(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.db"
    assert main(["verify", "--dsn", f"sqlite:///{path}", "--batch", "x"]) == 2
    assert "no database" in capsys.readouterr().err
    assert not path.exists()
