"""`cofi-eventlog report`: the dashboard's figures for a batch, on MariaDB and SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cofi_eventlog import EventLogger
from cofi_eventlog.cli import main
from cofi_eventlog.database import Database
from cofi_eventlog.tools.simulate.pipeline import STAGES as STAGES_RUN
from cofi_eventlog.tools.simulate.pipeline import Plan, error_text

STAGES = ("lid", "llm1", "llm2")
GPUS = ("10.0.0.11", "10.0.0.12")


def log_batch(dsn: str, table: str, batch: str = "b-report") -> dict[str, Any]:
    """20 files through three stages on two GPUs. lid fails files 4 and 9; llm1 fails file 4 (a retry of it
    completes) and never finishes file 15. llm2 is still at its first 10 files. Returns what was logged."""
    with EventLogger(dsn, table=table) as log:
        log.batch_started(batch, total_files=20)
        for stage in STAGES:
            log.stage_started(batch, stage)
            files = range(10) if stage == "llm2" else range(20)
            for i in files:
                name, gpu = f"f{i:02d}.wav", GPUS[i % 2]
                log.file_started(batch, stage, name, gpu)
                if stage == "lid" and i in (4, 9):
                    log.file_error(batch, stage, name, "audio too short", gpu)
                elif stage == "llm1" and i == 4:
                    log.file_error(batch, stage, name, TimeoutError("model timed out"), gpu)
                    log.file_started(batch, stage, name, gpu)
                    log.file_completed(batch, stage, name, gpu)
                elif not (stage == "llm1" and i == 15):
                    log.file_completed(batch, stage, name, gpu)
            if stage != "llm2":
                log.progress(batch, stage, 20, 20)
                log.stage_completed(batch, stage)
            else:
                log.progress(batch, stage, 5, 40)
                log.progress(batch, stage, 10, 40)
        log.file_completed("other-batch", "lid", "x.wav", "10.0.0.99")
        assert log.flush(10)
        logged = log.stats()["enqueued"] - 1
    return {"events": logged}


def report(capsys: pytest.CaptureFixture[str], dsn: str, table: str, *extra: str) -> dict[str, Any]:
    assert main(["report", "--dsn", dsn, "--table", table, "--json", *extra]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_the_dashboard_figures(backend: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table = backend
    logged = log_batch(dsn, table)
    result = report(capsys, dsn, table, "--batch", "b-report")
    assert result["events"] == logged["events"]
    assert result["total_files"] == 20
    stages = {s["stage"]: s for s in result["stages"]}
    assert [s["stage"] for s in result["stages"]] == list(STAGES)  # in the order they ran
    assert {k: stages["lid"][k] for k in ("started", "completed", "failed", "total", "progress_pct", "state")} == \
        {"started": 20, "completed": 18, "failed": 2, "total": 20, "progress_pct": 100.0, "state": "completed"}
    assert {k: stages["llm1"][k] for k in ("started", "completed", "failed", "done", "progress_pct")} == \
        {"started": 20, "completed": 19, "failed": 1, "done": 19, "progress_pct": 95.0}
    assert {k: stages["llm2"][k] for k in ("started", "completed", "total", "progress_pct", "state")} == \
        {"started": 10, "completed": 10, "total": 40, "progress_pct": 25.0, "state": "running"}
    assert result["errors"] == 3
    assert result["top_errors"] == [{"message": "audio too short", "count": 2},
                                    {"message": "model timed out", "count": 1}]
    gpus = {g["gpu"]: g for g in result["gpus"]}
    assert set(gpus) == set(GPUS)
    assert gpus["10.0.0.11"]["failed"] == 2 and gpus["10.0.0.12"]["failed"] == 1  # files 4, 4 and 9
    assert sum(g["completed"] for g in gpus.values()) == 18 + 19 + 10
    assert sum(g["started"] for g in gpus.values()) == 20 + 21 + 10
    assert result["first_event"] <= result["last_event"]
    with Database(dsn) as db:
        first, last = db.fetchall(f"SELECT MIN(createdAt), MAX(createdAt) FROM {db.name(table)} "
                                  "WHERE batchId = 'b-report'")[0]
    assert result["first_event"].startswith(str(first)[:19])
    assert result["last_event"].startswith(str(last)[:19])
    if result["seconds"] > 0:
        assert result["events_per_second"] == round(result["events"] / result["seconds"], 1)


def test_text_output_and_the_default_batch(backend: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    dsn, table = backend
    log_batch(dsn, table)
    with EventLogger(dsn, table=table) as log:
        log.file_error("newest", "lid", "a.wav", "disk full\nsecond line", "10.0.0.1")
    assert main(["report", "--dsn", dsn, "--table", table]) == 0
    out = capsys.readouterr().out
    assert out.startswith("batch newest")
    assert "disk full second line" in out
    assert main(["report", "--dsn", dsn, "--table", table, "--batch", "b-report", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "llm2" in out and "25.0%" in out and "audio too short" in out and "model timed out" not in out


def test_unknown_batch_and_missing_database(backend: tuple[str, str], capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    dsn, table = backend
    log_batch(dsn, table)
    assert main(["report", "--dsn", dsn, "--table", table, "--batch", "nope"]) == 1
    assert "no events for batch 'nope'" in capsys.readouterr().err
    assert main(["report", "--dsn", f"sqlite:///{tmp_path / 'absent.db'}"]) == 2
    assert not (tmp_path / "absent.db").exists()


def test_report_agrees_with_a_simulate_run(backend: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """Two worker processes run a 200-file batch; the report's figures match the plan the run followed."""
    dsn, table = backend
    done = subprocess.run([sys.executable, "-m", "cofi_eventlog", "simulate", "--files", "200", "--mode", "buffered",
                           "--workers", "2", "--failure-rate", "0.05", "--dsn", dsn, "--table", table, "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)["buffered"]
    plan = Plan.make(200, 0.05)
    result = report(capsys, dsn, table, "--batch", run["batch_id"])

    assert result["events"] == run["events"] == plan.events()
    for index, stage in enumerate(result["stages"]):
        assert stage["stage"] == STAGES_RUN[index]
        reached = [i for i in range(200) if plan.failures.get(i, len(STAGES_RUN)) >= index]
        failed = [i for i in reached if plan.failures.get(i) == index]
        assert (stage["started"], stage["completed"], stage["failed"]) == \
            (len(reached), len(reached) - len(failed), len(failed)), stage["stage"]
        assert stage["progress_pct"] == 100.0
    assert result["errors"] == len(plan.failures) == 10
    expected_messages = Counter(error_text(STAGES_RUN[s]) for s in plan.failures.values())
    assert {e["message"]: e["count"] for e in result["top_errors"]} == dict(expected_messages.most_common(5))
    gpus = {g["gpu"]: g for g in result["gpus"]}
    for worker, gpu in enumerate(("10.0.0.10", "10.0.0.11")):  # worker w takes files w, w+2, w+4, ...
        mine = [i for i in range(worker, 200, 2)]
        assert gpus[gpu]["failed"] == sum(1 for i in mine if i in plan.failures)
        assert gpus[gpu]["events"] == 2 * sum(plan.failures.get(i, len(STAGES_RUN) - 1) + 1 for i in mine)
    assert result["seconds"] >= 0 and result["first_event"] <= result["last_event"]
