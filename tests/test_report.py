"""`cofi-eventlog report`: the figures of the dashboard's batch page, told truthfully, on MariaDB and SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cofi_eventlog import EventLogger
from cofi_eventlog.cli import main
from cofi_eventlog.database import Database
from cofi_eventlog.sinks import iso_utc
from cofi_eventlog.tools.batchview import Reader
from cofi_eventlog.tools.simulate.legacy import processing_logs_ddl
from cofi_eventlog.tools.simulate.pipeline import STAGES as STAGES_RUN
from cofi_eventlog.tools.simulate.pipeline import Plan, error_text

STAGES = ("lid", "llm1", "llm2")
GPUS = ("10.0.0.11", "10.0.0.12")


def log_batch(dsn: str, table: str, batch: str = "b-report") -> int:
    """20 files through three stages on two GPUs; returns the events logged.

    lid: files 4 and 9 fail ("audio too short: 0.24 s" / "… 0.84 s"). llm1: file 4 raises KeyError and its
    retry completes, file 7 is retried after a TimeoutError and still runs, file 15 never ends.
    llm2 (progress 10 of 40) has done its first 10 files."""
    with EventLogger(dsn, table=table) as log:
        log.batch_started(batch, total_files=20)
        for stage in STAGES:
            log.stage_started(batch, stage)
            for i in range(10) if stage == "llm2" else range(20):
                name, gpu = f"f{i:02d}.wav", GPUS[i % 2]
                log.file_started(batch, stage, name, gpu)
                if stage == "lid" and i in (4, 9):
                    log.file_error(batch, stage, name, f"audio too short: {0.24 if i == 4 else 0.84} s", gpu)
                elif stage == "llm1" and i in (4, 7):
                    log.file_error(batch, stage, name, KeyError("lang") if i == 4 else TimeoutError("30 s"), gpu,
                                   payload={"call": name, "attempt": 1})
                    log.file_started(batch, stage, name, gpu)
                    if i == 4:
                        log.file_completed(batch, stage, name, gpu)
                elif not (stage == "llm1" and i == 15):
                    log.file_completed(batch, stage, name, gpu)
            if stage == "llm2":
                log.progress(batch, stage, 10, 40)
            else:
                log.stage_completed(batch, stage)
        log.file_completed("other-batch", "lid", "x.wav", "10.0.0.99")
        assert log.flush(10)
        return int(log.stats()["enqueued"]) - 1


def report(capsys: pytest.CaptureFixture[str], dsn: str, table: str, *extra: str, code: int = 0) -> dict[str, Any]:
    assert main(["report", "--dsn", dsn, "--table", table, "--json", *extra]) == code
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_the_figures(backend: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table = backend
    logged = log_batch(dsn, table)
    result = report(capsys, dsn, table, "--batch", "b-report")
    assert result["events"] == logged and result["files"] == 20 and result["files_from"] == "batch_start"
    assert result["state"] == "running"  # its events are seconds old and llm1 has files in flight
    stages = {s["stage"]: s for s in result["stages"]}
    assert [s["stage"] for s in result["stages"]] == list(STAGES)  # in the order they ran
    keys = ("total", "completed", "failed", "in_flight", "waiting", "attempts", "retries", "errors", "progress_pct")
    assert {k: stages["lid"][k] for k in keys} == {"total": 20, "completed": 18, "failed": 2, "in_flight": 0,
                                                   "waiting": 0, "attempts": 20, "retries": 0, "errors": 2,
                                                   "progress_pct": 100.0}
    # file 4 failed and completed on retry (completed, not failed); 7 is retrying and 15 never ended (in flight)
    assert {k: stages["llm1"][k] for k in keys} == {"total": 20, "completed": 18, "failed": 0, "in_flight": 2,
                                                    "waiting": 0, "attempts": 22, "retries": 2, "errors": 2,
                                                    "progress_pct": 90.0}
    assert stages["llm1"]["total_from"] == "previous stage"
    assert stages["llm1"]["state"] == "ended short"  # it logged stage_complete with two files in flight
    assert stages["llm2"]["state"] == "running"
    assert {k: stages["llm2"][k] for k in ("total", "completed", "waiting", "progress_pct")} == \
        {"total": 40, "completed": 10, "waiting": 30, "progress_pct": 25.0}
    assert stages["lid"]["state"] == "done" and stages["lid"]["end"] == stages["lid"]["last_event"]
    assert result["errors"] == 4
    groups = {(g["stage"], g["type"], g["shape"]): g["count"] for g in result["error_groups"]}
    assert groups == {("lid", None, "audio too short: <n> s"): 2, ("llm1", "KeyError", "'lang'"): 1,
                      ("llm1", "TimeoutError", "<n> s"): 1}
    gpus = {g["gpu"]: g for g in result["gpus"]}
    assert set(gpus) == set(GPUS) and not any(g["stuck"] for g in gpus.values())
    # llm1's file 7 (retrying) and 15 (never ended) are open on 10.0.0.12; 15 is the newer
    assert (gpus["10.0.0.11"]["state"], gpus["10.0.0.11"]["in_flight"], gpus["10.0.0.11"]["current"]) == \
        ("idle", 0, None)
    assert (gpus["10.0.0.12"]["state"], gpus["10.0.0.12"]["in_flight"]) == ("working", 2)
    assert {k: gpus["10.0.0.12"]["current"][k] for k in ("file", "stage")} == {"file": "f15.wav", "stage": "llm1"}
    assert (gpus["10.0.0.11"]["failed"], gpus["10.0.0.12"]["failed"]) == (2, 2)  # files 4, 4, 7, 9
    with Database(dsn) as db:
        first, last, completions = db.fetchall(f"SELECT MIN(createdAt), MAX(createdAt), SUM(CASE WHEN eventType = "
                                               f"'file_complete' THEN 1 ELSE 0 END) FROM {db.name(table)} "
                                               "WHERE batchId = 'b-report'")[0]
    assert sum(g["completed"] for g in gpus.values()) == int(completions)
    assert result["first_event"] == str(first).replace(" ", "T")[:23] + "Z"  # UTC, and labelled so
    assert result["last_event"] == str(last).replace(" ", "T")[:23] + "Z"
    chart = result["chart"]
    assert sum(sum(s["completed"]) for s in chart["series"]) == int(completions)
    assert sum(sum(s["errors"]) for s in chart["series"]) == 4


def test_steps_of_one_microsecond_are_ordered_by_their_event_ids(backend: tuple[str, str],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A file that fails and is restarted within one microsecond is in flight, not failed: createdAt ties,
    the eventIds (the call's time in ns, then the logger's sequence) do not."""
    dsn, table = backend
    at = time.time_ns() // 1000 * 1000
    rows = [(at.to_bytes(8, "big") + bytes(4) + seq.to_bytes(4, "big"), "b-tie", "lid", kind, "f.wav",
             "boom" if kind == "error" else None, "10.0.0.1", None, None, None, iso_utc(at // 1000))
            for seq, kind in enumerate(("file_start", "error", "file_start"))]
    with Database(dsn) as db:
        db.create_events_table(table)
        db.executemany(db.insert_events_sql(table), rows)
    lid = report(capsys, dsn, table, "--batch", "b-tie")["stages"][0]
    assert (lid["in_flight"], lid["failed"], lid["errors"], lid["retries"]) == (1, 0, 1, 1)


def test_quiet_batch_with_files_in_flight_is_stalled_not_completed(backend: tuple[str, str],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table = backend
    log_batch(dsn, table)
    time.sleep(1.2)
    assert main(["report", "--dsn", dsn, "--table", table, "--json", "--batch", "b-report", "--quiet-after", "1",
                 "--fail-if-stalled"]) == 3
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["state"] == "stalled" and "the batch stalled" in err
    assert [s["state"] for s in result["stages"]] == ["done", "ended short", "stalled"]
    with EventLogger(dsn, table=table) as log:  # saying it completed does not make it so
        log.batch_completed("b-report")
    assert report(capsys, dsn, table, "--batch", "b-report", "--quiet-after", "1")["state"] == "ended short"


def test_killed_workers_leave_a_stalled_batch(backend: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL a running simulate (its two workers too) in its fourth stage: the report says stalled, with
    files unfinished. (Killed in the first stage of a batch that logged no batch_start, the files seen would
    all be done: nothing says how many there were to be.)"""
    dsn, table = backend
    with Database(dsn) as db:
        db.create_events_table(table)
    run = subprocess.Popen([sys.executable, "-m", "cofi_eventlog", "simulate", "--files", "4000", "--mode", "buffered",
                            "--workers", "2", "--dsn", dsn, "--table", table], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with Database(dsn) as db:
                if int(db.scalar(f"SELECT COUNT(*) FROM {db.name(table)}")) > 26_000:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("simulate wrote nothing within 60 s")
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    time.sleep(1.2)
    result = report(capsys, dsn, table, "--quiet-after", "1")
    assert result["state"] == "stalled" and result["batch"].startswith("sim-buffered-")
    assert sum(s["waiting"] + s["in_flight"] for s in result["stages"]) > 0
    assert result["progress_pct"] < 100
    assert all(s["state"] != "running" for s in result["stages"])


def test_newest_batch_by_time_and_figures_of_a_simulate_run(backend: tuple[str, str],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Both shapes of a 150-file run: the legacy rows carry random eventIds, yet the report picks the
    buffered batch, the newest by time, and its figures match the plan the run followed."""
    dsn, table = backend
    done = subprocess.run([sys.executable, "-m", "cofi_eventlog", "simulate", "--files", "150", "--mode", "both",
                           "--workers", "2", "--failure-rate", "0.06", "--dsn", dsn, "--table", table,
                           "--legacy-table", f"{table}_legacy", "--json"], capture_output=True, text=True, timeout=120)
    try:
        assert done.returncode == 0, done.stderr
        run = json.loads(done.stdout)
        result = report(capsys, dsn, table)
        assert result["batch"] == run["buffered"]["batch_id"]
        plan = Plan.make(150, 0.06)
        assert result["events"] == plan.events() + 1  # + its batch_start, which declared the five stages
        assert result["state"] == "completed"  # every declared stage done, though no batch_complete
        assert result["declared_stages"] == list(STAGES_RUN) and result["files"] == 150
        for index, stage in enumerate(result["stages"]):
            reached = [i for i in range(150) if plan.failures.get(i, len(STAGES_RUN)) >= index]
            failed = [i for i in reached if plan.failures.get(i) == index]
            assert (stage["stage"], stage["total"], stage["completed"], stage["failed"], stage["in_flight"],
                    stage["waiting"]) == (STAGES_RUN[index], len(reached), len(reached) - len(failed), len(failed),
                                          0, 0)
        expected = Counter(STAGES_RUN[s] for s in plan.failures.values())
        assert {g["stage"]: g["count"] for g in result["error_groups"]} == dict(expected)
        assert {g["type"] for g in result["error_groups"]} == {"TimeoutError"}
        assert {g["shape"] for g in result["error_groups"]} == {error_text(s).split(": ", 1)[1].replace("30", "<n>")
                                                                for s in expected}
        assert [g["gpu"] for g in result["gpus"]] == ["10.0.0.10", "10.0.0.11"]
        legacy = report(capsys, dsn, table, "--batch", run["legacy"]["batch_id"])  # read through the batch index
        assert legacy["events"] == plan.events() and legacy["errors"] == len(plan.failures)
    finally:
        with Database(dsn) as db:
            db.execute(f"DROP TABLE IF EXISTS {db.name(table + '_legacy')}")


def test_migrated_history_reads_as_history(backend: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table = backend
    source = f"{table}_plog"
    rows = [(f"c{i}.wav", "old-7", "lid", status, "timeout" if status == "failed" else None,
             f"2024-03-0{1 + i // 10} 10:00:{i % 60:02d}") for i, status in
            enumerate(["started", "started"] + ["success"] * 23 + ["failed"] * 5)]
    try:
        with Database(dsn) as db:
            db.execute(processing_logs_ddl(db.dialect, source))
            db.executemany(f"INSERT INTO {db.name(source)} (call_id, batch_id, stage_name, status, error_message, "
                           "created_at) VALUES (%s, %s, %s, %s, %s, %s)", rows)
        assert main(["migrate", "--dsn", dsn, "--source-table", source, "--table", table,
                     "--map-status", "started=file_start"]) == 0
        capsys.readouterr()
        result = report(capsys, dsn, table, "--batch", "old-7")
        assert (result["state"], result["migrated"], result["events_per_second"]) == ("migrated", True, None)
        (lid,) = result["stages"]
        assert (lid["state"], lid["total"], lid["completed"], lid["failed"], lid["in_flight"]) == \
            ("done", 28, 23, 5, 0)
        assert lid["files_per_minute"] is None
        assert main(["report", "--dsn", dsn, "--table", table, "--batch", "old-7"]) == 0
        text = capsys.readouterr().out
        assert "MIGRATED" in text and "history migrated from processing_logs: no rates" in text
        assert "events/s" not in text
    finally:
        with Database(dsn) as db:
            for name in (source, f"{source}_backup"):
                db.execute(f"DROP TABLE IF EXISTS {db.name(name)}")


def test_text_escapes_control_characters_and_labels_utc(backend: tuple[str, str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table = backend
    with EventLogger(dsn, table=table) as log:
        log.file_started("b\x1b[2Jx", "lid", "a\x1b]0;owned\x07.wav", "10.0.0.1")
        log.file_error("b\x1b[2Jx", "lid", "a\x1b]0;owned\x07.wav", "bad\r\x1b[31mred\u202e", "10.0.0.1")
    assert main(["report", "--dsn", dsn, "--table", table]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out and "\x07" not in out
    assert "batch b\\x1b[2Jx" in out and "a\\x1b]0;owned\\x07.wav" in out and "bad\\r\\x1b[31mred\\u202e" in out
    assert " UTC" in out and "start UTC" in out


def test_watch_follows_a_running_batch_then_exits_with_the_alert(backend: tuple[str, str], tmp_path: Path) -> None:
    dsn, table = backend
    with EventLogger(dsn, table=table, flush_interval=0.05) as log:
        log.file_started("live", "lid", "f0.wav", "10.0.0.1")
        log.flush(10)
        watch = subprocess.Popen([sys.executable, "-m", "cofi_eventlog", "report", "--dsn", dsn, "--table", table,
                                  "--watch", "0.2", "--quiet-after", "1.5", "--max-errors", "0"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(1, 8):
            time.sleep(0.15)
            log.file_started("live", "lid", f"f{i}.wav", "10.0.0.1")
            log.file_error("live", "lid", f"f{i}.wav", "boom", "10.0.0.1")
    out, err = watch.communicate(timeout=30)
    assert watch.returncode == 3, err  # 7 errors > --max-errors 0, once the batch stopped running
    frames = out.split("-- next in 0.2 s")
    assert len(frames) >= 3
    assert "RUNNING" in frames[0] and "STALLED" in frames[-1]
    events = [int(f.split(" events,")[0].rsplit(" ", 1)[-1]) for f in frames if " events," in f]
    assert events == sorted(events) and events[0] < events[-1] == 15
    assert "7 errors, more than --max-errors 0" in err


def test_errors_of_the_last_minutes_across_batches(backend: tuple[str, str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table = backend
    log_batch(dsn, table)
    with EventLogger(dsn, table=table) as log:
        log.file_error("b-other", "lid", "y.wav", "disk full", "10.0.0.3")
    found = report(capsys, dsn, table, "--errors-since", "5")
    assert found["errors"] == 5 and {b["batch"]: b["errors"] for b in found["batches"]} == {"b-report": 4,
                                                                                           "b-other": 1}
    assert main(["report", "--dsn", dsn, "--table", table, "--errors-since", "5", "--max-errors", "4"]) == 3
    assert main(["report", "--dsn", dsn, "--table", table, "--batch", "b-report", "--max-errors", "4"]) == 0
    with Database(dsn) as db:  # the time-range question reads its range through the (createdAt, eventType) index
        plan = db.fetchall(("EXPLAIN QUERY PLAN " if db.dialect == "sqlite" else "EXPLAIN ") +
                           f"SELECT batchId, createdAt FROM {db.name(table)} WHERE createdAt >= %s "
                           "AND eventType = 'error'", ("2099-01-01 00:00:00",))
    assert "time_type" in str(plan)


def test_unknown_batch_missing_database_and_read_only(backend: tuple[str, str], capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    dsn, table = backend
    log_batch(dsn, table)
    assert main(["report", "--dsn", dsn, "--table", table, "--batch", "nope"]) == 1
    assert "no events for batch nope" in capsys.readouterr().err
    assert main(["report", "--dsn", f"sqlite:///{tmp_path / 'absent.db'}"]) == 2
    assert not (tmp_path / "absent.db").exists()
    with Reader(dsn) as reader, pytest.raises(ValueError, match="reads only"):
        reader.fetchall(f"DELETE FROM {reader.name(table)}")
