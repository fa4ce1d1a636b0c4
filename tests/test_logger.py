"""The call-site API: the seed's call sites, the process-wide logger, options, counts, lifecycle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import count_of, rows_of

from cofi_eventlog import EventLogger
from cofi_eventlog.database import Database

SEED_AFTER = '''
import json
from cofi_eventlog import EventLogger

EventLogger.configure(DSN, table=TABLE, spool_dir=SPOOL)
batch_id, file_name, gpu_ip = 4711, "call-0001.wav", "10.0.0.12"
payload = {"audio_url": "s3://bucket/call-0001.wav", "duration_s": 31.5}
try:
    raise RuntimeError("LID model returned no language")
except Exception as e:
    # Only log to batchExecutionLog
    EventLogger.file_error(
        batch_id,
        'lid',
        file_name,
        str(e),
        gpu_ip,
        payload=payload  # Can pass payload if needed
    )
assert EventLogger.flush(10)
print(json.dumps(EventLogger.stats()))
'''


def test_seed_after_snippet_runs_unchanged(backend: tuple[str, str], spool_dir: str) -> None:
    """The plan's "after" code, in a fresh interpreter, against each back-end."""
    dsn, table = backend
    prelude = f"DSN, TABLE, SPOOL = {dsn!r}, {table!r}, {spool_dir!r}\n"
    out = subprocess.run([sys.executable, "-c", prelude + SEED_AFTER], capture_output=True, text=True,
                         timeout=60, check=True)
    stats = json.loads(out.stdout)
    assert stats["written"] == 1 and stats["dropped"] == 0
    with Database(dsn) as db:
        found = db.scalar(f"SELECT COUNT(*) FROM {db.name(table)} WHERE eventType = 'error' AND batchId = %s",
                          ("4711",))
    assert found == 1
    row = rows_of(dsn, table)[0]
    assert (row["batchId"], row["stage"], row["fileName"], row["message"], row["gpuIp"]) == (
        "4711", "lid", "call-0001.wav", "LID model returned no language", "10.0.0.12")
    assert json.loads(str(row["metadata"]))["payload"] == {"audio_url": "s3://bucket/call-0001.wav",
                                                          "duration_s": 31.5}


def test_100k_events_from_4_threads_land_exactly_once(mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    """Statements are counted by the server, on the writer's own session, so other clients don't skew it."""
    sessions: list[Any] = []
    log = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir, flush_interval=60,
                      on_connect=sessions.append)

    def work(k: int) -> None:
        for i in range(25_000):
            log.file_completed("b-100k", "lid", f"w{k}-{i}.wav", f"10.0.0.{k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.flush(60) is True
    assert len(sessions) == 1  # the writer is idle now: the queue is empty and nothing is spooled
    with sessions[0].cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Com_insert'")
        statements = int(cur.fetchone()[1])
    stats = log.stats()
    log.close()
    with Database(mysql_dsn) as db:
        found = db.fetchall(f"SELECT COUNT(*), COUNT(DISTINCT eventId) FROM {db.name(mysql_table)}")[0]
    assert found == (100_000, 100_000)
    assert stats["dropped"] == 0 and stats["written"] == 100_000 and stats["enqueued"] == 100_000
    assert statements == stats["flushes"] <= 1_000


def test_created_at_is_the_time_of_the_call_not_of_the_flush(backend: tuple[str, str], spool_dir: str) -> None:
    dsn, table = backend
    with EventLogger(dsn, table=table, spool_dir=spool_dir, flush_interval=30) as log:
        before = datetime.now(timezone.utc).replace(tzinfo=None)
        log.progress("b", "lid", 1, 10)
        after = datetime.now(timezone.utc).replace(tzinfo=None)
        time.sleep(1.0)
        assert log.flush(10)
    created = rows_of(dsn, table)[0]["createdAt"]
    stamp = created if isinstance(created, datetime) else datetime.fromisoformat(str(created))
    assert before <= stamp <= after


def test_every_event_method_writes_its_event_type(backend: tuple[str, str], spool_dir: str) -> None:
    dsn, table = backend
    with EventLogger(dsn, table=table, spool_dir=spool_dir) as log:
        log.batch_started("b", total_files=2, metadata={"source": "s3"})
        log.stage_started("b", "lid", gpu_ip="g1")
        log.file_started("b", "lid", "a.wav", "g1", metadata={"size": 3})
        log.file_completed("b", "lid", "a.wav", "g1")
        log.file_error("b", "lid", "c.wav", ValueError("bad audio"), "g1")
        log.progress("b", "lid", 2, 2, gpu_ip="g1")
        log.stage_completed("b", "lid")
        log.batch_completed("b", metadata={"ok": True})
    rows = rows_of(dsn, table)
    assert [r["eventType"] for r in rows] == ["batch_start", "stage_start", "file_start", "file_complete",
                                              "error", "progress", "stage_complete", "batch_complete"]
    assert rows[0]["total"] == 2 and json.loads(str(rows[0]["metadata"])) == {"source": "s3"}
    assert (rows[5]["processed"], rows[5]["total"]) == (2, 2)
    assert json.loads(str(rows[4]["metadata"]))["error_type"] == "ValueError"
    assert len({bytes(r["eventId"]) for r in rows}) == 8


def test_class_calls_use_the_process_wide_logger_from_the_environment(tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    code = (
        "from cofi_eventlog import EventLogger\n"
        "EventLogger.file_started('b', 'lid', 'a.wav')\n"
        "EventLogger.file_completed('b', 'lid', 'a.wav')\n"
        "assert EventLogger.default() is EventLogger.default()\n"
        # no flush, no close: the exit hook drains
    )
    env = {**os.environ, "COFI_EVENTLOG_DSN": f"sqlite:///{db}"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60, cwd=tmp_path)
    assert count_of(f"sqlite:///{db}", "batchExecutionLog") == 2


def test_default_is_embedded_sqlite_in_the_working_directory(tmp_path: Path) -> None:
    code = "from cofi_eventlog import EventLogger\nEventLogger.stage_started('b', 'lid')\n"
    env = {k: v for k, v in os.environ.items() if k != "COFI_EVENTLOG_DSN"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60, cwd=tmp_path)
    assert count_of(f"sqlite:///{tmp_path / 'cofi_eventlog.db'}", "batchExecutionLog") == 1


def test_configure_flushes_and_closes_the_previous_logger(tmp_path: Path, spool_dir: str) -> None:
    first, second = f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}"
    try:
        old = EventLogger.configure(first, spool_dir=spool_dir, flush_interval=30)
        EventLogger.file_started("b", "lid", "a.wav")
        new = EventLogger.configure(second, spool_dir=spool_dir)
        EventLogger.file_started("b", "lid", "b.wav")
        assert EventLogger.flush(10)
        assert repr(old).endswith("closed)") and EventLogger.default() is new
    finally:
        EventLogger.close()
    assert count_of(first, "batchExecutionLog") == 1
    assert count_of(second, "batchExecutionLog") == 1


def test_close_is_idempotent_and_later_calls_go_to_a_journal_the_next_logger_writes(
        tmp_path: Path, spool_dir: str) -> None:
    dsn = f"sqlite:///{tmp_path / 'c.db'}"
    log = EventLogger(dsn, spool_dir=spool_dir)
    log.file_started("b", "lid", "a.wav")
    log.close()
    log.close()
    for _ in range(100):
        log.file_started("b", "lid", "late.wav")  # a daemon thread still logging at exit, say
    stats = log.stats()
    assert (stats["written"], stats["unwritten"], stats["dropped"]) == (1, 100, 0)
    assert len(list(Path(log.spool_folder).glob("*.jnl"))) == 1  # one journal, not a file per call
    assert not log.flush(0.1)  # closed: nothing writes them in this logger
    never_started = EventLogger(dsn, spool_dir=spool_dir)
    never_started.close()
    never_started.file_started("b", "lid", "never.wav")
    later = EventLogger(dsn, spool_dir=spool_dir)
    assert later.flush(10)
    later.close()
    assert log.stats()["unwritten"] == 0
    names = [r["fileName"] for r in rows_of(dsn, "batchExecutionLog")]
    assert sorted(set(names)) == ["a.wav", "late.wav", "never.wav"] and len(names) == 102


def test_strict_mode_raises_on_the_callers_thread(tmp_path: Path, spool_dir: str) -> None:
    with EventLogger(f"sqlite:///{tmp_path / 's.db'}", spool_dir=spool_dir, strict=True) as log:
        with pytest.raises(ValueError, match="batch_id"):
            log.file_error(None, "lid", "a.wav", "e")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="file_name"):
            log.file_started("b", "lid", 12)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="payload"):
            log.file_error("b", "lid", "a.wav", "e", payload={"x": float("nan")})
        log.file_error("b", "lid", "a.wav", "fine", payload={"x": 1})
        assert log.flush(10)
        assert log.stats()["written"] == 1


def test_default_mode_records_and_counts_bad_input(backend: tuple[str, str], spool_dir: str) -> None:
    dsn, table = backend
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with EventLogger(dsn, table=table, spool_dir=spool_dir) as log:
        log.file_error(None, "lid", "a\ud800.wav", "m" * 10_000_000, payload={"c": cyclic, "b": b"\x01", "n": {1}})  # type: ignore[arg-type]
        assert log.flush(10)
        stats = log.stats()
    assert stats["coerced"] == 1 and stats["written"] == 1 and stats["dropped"] == 0
    row = rows_of(dsn, table)[0]
    assert row["batchId"] == "unknown" and row["fileName"] == "a\ufffd.wav"
    assert "…[truncated" in str(row["message"])
    meta = json.loads(str(row["metadata"]))
    assert len(meta["coerced"]) >= 5


@pytest.mark.parametrize("table", ["x; DROP TABLE y", "1abc", "a-b", "", "événements", "a" * 65])
def test_table_must_be_a_plain_identifier(table: str) -> None:
    with pytest.raises(ValueError, match="table"):
        EventLogger("sqlite:///unused.db", table=table)


@pytest.mark.parametrize("option", [{"batch_size": 0}, {"flush_interval": -1}, {"max_queue": 1.5},
                                    {"durability": "disk"}, {"on_full": "wait"}])
def test_bad_options_are_refused(option: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        EventLogger("sqlite:///unused.db", **option)


def test_stats_has_the_documented_keys(tmp_path: Path, spool_dir: str) -> None:
    with EventLogger(f"sqlite:///{tmp_path / 'k.db'}", spool_dir=spool_dir) as log:
        stats = log.stats()
    assert {"enqueued", "written", "dropped", "queue_depth", "flushes", "retries", "last_error"} <= set(stats)


def test_a_nan_that_json_would_turn_into_null_is_recorded_not_bent(tmp_path: Path, spool_dir: str) -> None:
    dsn = f"sqlite:///{tmp_path / 'nan.db'}"
    with EventLogger(dsn, spool_dir=spool_dir) as log:
        log.file_completed("b", "lid", "a.wav", metadata={"loss": float("nan"), "ok": None})
        log.file_error("b", "lid", "b.wav", "e", payload=[1.0, float("inf")])
        log.file_completed("b", "lid", "c.wav", metadata={"ok": None})  # a real null stays null, unnoted
        assert log.flush(10)
        assert log.stats()["coerced"] == 2
    rows = {r["fileName"]: json.loads(str(r["metadata"])) for r in rows_of(dsn, "batchExecutionLog")}
    assert rows["a.wav"]["loss"] != None and rows["a.wav"]["coerced"]  # noqa: E711
    assert rows["b.wav"]["payload"][1] is not None and rows["b.wav"]["coerced"]
    assert rows["c.wav"] == {"ok": None}
