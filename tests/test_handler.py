"""EventLogHandler: stdlib logging records carrying a batch become events; it never raises, never loops."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import rows_of

from cofi_eventlog import EventLogger, EventLogHandler
from cofi_eventlog.engine.diagnostics import Warner


@pytest.fixture
def app_log() -> logging.Logger:
    """A stdlib logger outside the logging tree: only the handlers a test adds see its records."""
    return logging.Logger("app", logging.DEBUG)


def meta(row: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(str(row["metadata"])) if row["metadata"] is not None else {}
    return value


def test_records_with_a_batch_become_events(backend: tuple[str, str], app_log: logging.Logger) -> None:
    dsn, table = backend
    with EventLogger(dsn, table=table) as events:
        handler = EventLogHandler(events)
        app_log.addHandler(handler)
        where = {"batch_id": "b1", "stage": "lid", "file_name": "a.wav", "gpu_ip": "10.0.0.7"}
        app_log.info("starting %s", "a.wav", extra={**where, "event": "file_start"})
        app_log.error("LID failed on %s", "a.wav", extra={**where, "payload": {"attempt": 2}})
        try:
            raise TimeoutError("model timed out")
        except TimeoutError:
            app_log.exception("LID gave up on a.wav", extra=where)
        app_log.info("halfway", extra={"batch_id": "b1", "stage": "lid", "processed": 5, "total": 10})
        app_log.info("%d files", 10, extra={"batch_id": "b1", "event": "batch_start", "total": 10})
        app_log.warning("not about a batch")
        assert events.flush(10)
        assert (handler.emitted, handler.skipped, handler.failed) == (5, 1, 0)
    rows = {f"{r['eventType']}{r['message']}": r for r in rows_of(dsn, table)}
    assert len(rows) == 5

    start = rows["file_startNone"]
    assert (start["batchId"], start["stage"], start["fileName"], start["gpuIp"]) == ("b1", "lid", "a.wav", "10.0.0.7")
    assert meta(start)["message"] == "starting a.wav" and meta(start)["level"] == "INFO"

    plain = rows["errorLID failed on a.wav"]
    assert meta(plain)["payload"] == {"attempt": 2}

    raised = rows["errormodel timed out"]
    assert meta(raised)["error_type"] == "TimeoutError"
    assert "raise TimeoutError" in meta(raised)["traceback"]
    assert meta(raised)["log_message"] == "LID gave up on a.wav" and "payload" not in meta(raised)

    progress = rows["progressNone"]
    assert (progress["processed"], progress["total"]) == (5, 10)
    assert meta(progress)["message"] == "halfway"
    assert rows["batch_startNone"]["total"] == 10


def test_every_record_keeps_its_file_name_and_its_payload_where_file_error_puts_it(
        backend: tuple[str, str], app_log: logging.Logger) -> None:
    dsn, table = backend
    with EventLogger(dsn, table=table) as events:
        app_log.addHandler(EventLogHandler(events))
        where = {"batch_id": "b1", "stage": "lid", "file_name": "a.wav", "payload": {"frames": 3}}
        app_log.info("halfway", extra={**where, "processed": 1, "total": 2})
        try:
            raise KeyError("lang")
        except KeyError:
            app_log.exception("LID failed", extra=where)
        events.file_error("b1", "lid", "a.wav", "direct", payload={"frames": 3})
        assert events.flush(10)
    rows = rows_of(dsn, table)
    assert [r["fileName"] for r in rows] == ["a.wav"] * 3
    assert [meta(r)["payload"] for r in rows] == [{"frames": 3}] * 3
    assert meta(rows[1])["log_message"] == "LID failed"


def test_the_documented_example_runs_as_written(mysql_dsn: str, mysql_table: str, tmp_path: Path) -> None:
    """docs/handler.md's example, copied as it stands into a fresh interpreter: its INFO record is an event."""
    text = (Path(__file__).parent.parent / "docs" / "handler.md").read_text()
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "COFI_EVENTLOG_DSN": mysql_dsn,
           "COFI_EVENTLOG_OPTIONS": json.dumps({"table": mysql_table, "spool_dir": str(tmp_path)})}
    done = subprocess.run([sys.executable, "-c", example], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = rows_of(mysql_dsn, mysql_table)
    assert [(r["eventType"], r["fileName"]) for r in rows] == [("file_start", "a.wav"), ("error", "a.wav")]
    assert meta(rows[1])["payload"] == {"duration_s": 0.2}


def test_the_library_s_own_warnings_never_come_back(backend: tuple[str, str], app_log: logging.Logger) -> None:
    dsn, table = backend
    ours = logging.getLogger("cofi_eventlog")
    with EventLogger(dsn, table=table) as events:
        handler = EventLogHandler(events)
        root = logging.getLogger()
        root.addHandler(handler)
        app_log.addHandler(handler)

        class Forwarder(logging.Handler):
            """Some other handler that re-logs what it sees, under the application's logger."""

            def emit(self, record: logging.LogRecord) -> None:
                app_log.error("forwarded: %s", record.getMessage(), extra={"batch_id": "loop", "stage": "x"})

        forwarder = Forwarder()
        ours.addHandler(forwarder)
        try:
            ours.error("own diagnostics", extra={"batch_id": "loop", "stage": "x"})
            Warner()("down", "database unavailable; events kept in the journal")
            app_log.error("a real one", extra={"batch_id": "loop", "stage": "x"})
            assert events.flush(10)
        finally:
            ours.removeHandler(forwarder)
            root.removeHandler(handler)
    messages = [r["message"] for r in rows_of(dsn, table)]
    # the record of the "cofi_eventlog" logger itself is passed over; the application's re-log of it is an
    # application record like any other; but what is re-logged while the library warns is passed over too
    assert messages == ["forwarded: own diagnostics", "a real one"]


def test_it_never_raises(tmp_path: Any, app_log: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"sqlite:///{tmp_path / 'events.db'}"
    strict = EventLogger(dsn, strict=True)
    handler = EventLogHandler(strict)
    app_log.addHandler(handler)
    try:
        app_log.error("bad batch id", extra={"batch_id": object(), "stage": "lid"})  # strict: TypeError inside
        app_log.error("%d broken format", "x", extra={"batch_id": "b", "stage": "lid"})
        app_log.info("unknown", extra={"batch_id": "b", "event": "teleport"})
        app_log.error("fine", extra={"batch_id": "b", "stage": "lid"})
        assert strict.flush(10)
    finally:
        strict.close()
    assert handler.failed == 3 and handler.emitted == 1
    err = capsys.readouterr().err
    assert "teleport" in err and "Logging error" in err
    app_log.error("after close", extra={"batch_id": "b", "stage": "lid"})  # kept in a journal for the next logger
    assert handler.failed == 3 and handler.emitted == 2
    assert [r["message"] for r in rows_of(dsn, "batchExecutionLog")] == ["fine"]


def test_without_a_logger_it_uses_the_process_wide_one(backend: tuple[str, str], app_log: logging.Logger) -> None:
    dsn, table = backend
    EventLogger.configure(dsn, table=table)
    try:
        handler = EventLogHandler(level=logging.ERROR)
        app_log.addHandler(handler)
        app_log.info("below the handler's level", extra={"batch_id": "pw", "stage": "lid"})
        app_log.critical("disk gone", extra={"batch_id": "pw", "stage": "lid", "file_name": "z.wav"})
        handler.flush()
        rows = rows_of(dsn, table)
        assert [(r["eventType"], r["fileName"], r["message"]) for r in rows] == [("error", "z.wav", "disk gone")]
    finally:
        EventLogger.close()
