"""`cofi-eventlog prune`: deletes exactly the events older than the cutoff, in chunks along eventId, counted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from cofi_eventlog.cli import main
from cofi_eventlog.database import Database
from cofi_eventlog.events import EventIds
from cofi_eventlog.sinks import iso_utc
from cofi_eventlog.tools.migrate.mapping import migrated_event_id, source_tag
from cofi_eventlog.tools.prune import cutoff_key, parse_age

DAY_NS = 86_400 * 10**9


def born(i: int) -> int:
    """How long before the fixture's now the i-th live event was made, in ns."""
    return i * DAY_NS // 2 + DAY_NS // 4


def older_than(days: int) -> set[str]:
    return {f"live-{i}" for i in range(400) if born(i) > days * DAY_NS}


def event(event_id: bytes, created: str, name: str, batch: str | None = None) -> tuple[object, ...]:
    """An event of its own batch (unless told): retention is by batch."""
    return (event_id, batch or f"b-{name}", "lid", "file_start", name, None, None, None, None, None, created)


@pytest.fixture
def aged(backend: tuple[str, str]) -> Iterator[tuple[str, str, int]]:
    """(dsn, table, rows older than 90 days): 400 live events, one every half day back from now (and a quarter
    day off, away from the cutoff), migrated ones dated 9999-12-31 and 1969, and one whose eventId does not
    start with its time."""
    dsn, table = backend
    ids, now = EventIds(), time.time_ns()
    rows = [event(ids.make(now - born(i), i), iso_utc((now - born(i)) // 1000), f"live-{i}") for i in range(400)]
    tag = source_tag("processing_logs")
    rows.append(event(migrated_event_id(tag, 1, datetime(9999, 12, 31)), "9999-12-31 00:00:00.000000", "far"))
    rows.append(event(migrated_event_id(tag, 2, datetime(1969, 7, 20)), "1969-07-20 00:00:00.000000", "moon"))
    rows.append(event(b"\x01" * 16, iso_utc(now // 1000), "foreign-id"))  # old by its id, new by createdAt
    with Database(dsn) as db:
        db.create_events_table(table)
        db.executemany(db.insert_events_sql(table), rows)
    older = len(older_than(90)) + 1  # the 1969 one too
    yield dsn, table, older


def names_left(dsn: str, table: str) -> set[str]:
    with Database(dsn) as db:
        return {str(r[0]) for r in db.fetchall(f"SELECT fileName FROM {db.name(table)}")}


def test_deletes_exactly_the_old_events_in_chunks(aged: tuple[str, str, int],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table, older = aged
    before = names_left(dsn, table)
    assert main(["prune", "--dsn", dsn, "--table", table, "--older-than", "90d", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert (dry["matching"], dry["deleted"], dry["kept_newer"]) == (older, 0, 1)
    assert names_left(dsn, table) == before

    assert main(["prune", "--dsn", dsn, "--table", table, "--older-than", "90d", "--batch-size", "37",
                 "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["deleted"] == older == 221
    assert done["chunks"] == -(-(older + 1) // 37)  # the foreign eventId takes a place in a chunk, kept
    gone = older_than(90) | {"moon"}
    assert names_left(dsn, table) == before - gone
    cutoff = datetime.fromisoformat(done["cutoff"])
    with Database(dsn) as db:
        oldest = db.scalar(f"SELECT MIN(createdAt) FROM {db.name(table)} WHERE fileName LIKE %s", ("live-%",))
    assert (oldest if isinstance(oldest, datetime) else datetime.fromisoformat(oldest)) >= cutoff

    assert main(["prune", "--dsn", dsn, "--table", table, "--older-than", "90d"]) == 0
    out = capsys.readouterr().out
    assert "deleted 0 events in 0 chunks" in out  # nothing left to delete
    assert "kept 1 row whose eventId is older than the cutoff but whose createdAt is not" in out
    assert names_left(dsn, table) == before - gone


def test_the_text_output_counts(aged: tuple[str, str, int], capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table, _ = aged
    assert main(["prune", "--dsn", dsn, "--table", table, "--older-than", "150d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    expected = len(older_than(150)) + 1
    assert f"would delete {expected} events, in about 1 chunk of up to 5,000" in out
    assert main(["prune", "--dsn", dsn, "--table", table, "--older-than", "150d", "--batch-size", "10"]) == 0
    out, err = capsys.readouterr()
    assert f"deleted {expected} events in {-(-expected // 10)} chunks of up to 10 rows" in out
    assert f"prune {table} [" in err and f"100% {expected}/{expected} rows" in err


def test_rows_without_an_event_id_are_left_and_said(backend: tuple[str, str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A table upgraded by init-db from an older shape: its old rows have no eventId."""
    dsn, table = backend
    with Database(dsn) as db:
        key = "INT AUTO_INCREMENT PRIMARY KEY" if db.dialect == "mysql" else "INTEGER PRIMARY KEY"
        kind = "BINARY(16)" if db.dialect == "mysql" else "BLOB"
        db.execute(f"CREATE TABLE {db.name(table)} (id {key}, eventId {kind} NULL UNIQUE, batchId VARCHAR(128), "
                   "createdAt VARCHAR(26))")
        old = iso_utc((time.time_ns() - 200 * DAY_NS) // 1000)
        db.executemany(f"INSERT INTO {db.name(table)} (eventId, batchId, createdAt) VALUES (%s, 'old', %s)",
                       [(None, old), (None, old), (EventIds().make(time.time_ns() - 200 * DAY_NS, 1), old)])
    assert main(["prune", "--dsn", dsn, "--table", table, "--older-than", "90d"]) == 0
    out = capsys.readouterr().out
    assert "deleted 1 event in 1 chunk" in out and "left 2 rows that have no eventId" in out
    with Database(dsn) as db:
        assert db.scalar(f"SELECT COUNT(*) FROM {db.name(table)}") == 2


@pytest.mark.parametrize("age", ["90", "0d", "-1d", "ninety days", "1y"])
def test_bad_ages_are_refused(age: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--dsn", "sqlite:///x.db", "--older-than", age])
    assert exc.value.code == 2 and "--older-than" in capsys.readouterr().err


def test_ages_and_the_cutoff_key() -> None:
    assert parse_age("90d") == timedelta(days=90) and parse_age(" 12h ") == timedelta(hours=12)
    assert parse_age("2w") == timedelta(weeks=2) and parse_age("1.5d") == timedelta(hours=36)
    moment = datetime(2026, 3, 1, 12, 0, 0)
    ns = int(moment.replace(tzinfo=timezone.utc).timestamp()) * 10**9
    assert cutoff_key(moment) == ns.to_bytes(8, "big") + bytes(8)
    ids = EventIds()
    assert ids.make(ns - 1, 0xFFFFFFFF) < cutoff_key(moment) <= ids.make(ns, 0)


def test_a_missing_table_or_database_is_a_clear_error(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", "--dsn", "sqlite:///nowhere/x.db", "--older-than", "1d"]) == 2
    assert "no database at" in capsys.readouterr().err


def test_a_statement_the_database_refuses_is_a_message(backend: tuple[str, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table = backend
    with Database(dsn) as db:
        db.execute(f"CREATE TABLE {db.name(table)} (eventId VARCHAR(16))")  # no createdAt
    assert main(["prune", "--dsn", dsn, "--table", table, "--older-than", "1d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cofi-eventlog prune: ") and "Traceback" not in err
    assert "batchId" in err or "createdAt" in err


def test_a_batch_with_events_after_the_cutoff_is_kept_whole(backend: tuple[str, str],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A batch that began 100 days ago and still runs: its head is not cut off, or the dashboard would call
    it completed. A finished batch of the same age goes whole."""
    dsn, table = backend
    ids, now = EventIds(), time.time_ns()
    rows = []
    for batch in ("running", "finished"):
        for i in range(100):
            if batch == "finished":  # 200 to 101 days ago
                at = now - (200 - i) * DAY_NS
            else:  # 150 to 91 days ago, then the last 40 minutes
                at = now - (150 - i) * DAY_NS if i < 60 else now - (100 - i) * 60 * 10**9
            rows.append(event(ids.make(at, len(rows)), iso_utc(at // 1000), f"{batch}-{i}", batch))
    with Database(dsn) as db:
        db.create_events_table(table)
        db.executemany(db.insert_events_sql(table), rows)
    args = ["prune", "--dsn", dsn, "--table", table, "--older-than", "90d", "--batch-size", "7"]
    assert main([*args, "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert (dry["matching"], dry["kept_running"], dry["running_batches"]) == (100, 60, 1)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "deleted 100 events" in out and "kept 60 older events of 1 batch with events after the cutoff" in out
    with Database(dsn) as db:
        left = dict(db.fetchall(f"SELECT batchId, COUNT(*) FROM {db.name(table)} GROUP BY batchId"))
    assert left == {"running": 100}
