"""Incidents as an on-call engineer meets them, staged on MariaDB and SQLite with events at chosen times,
checked in the API (``report --json``, the same object as ``/api/batches/<id>``) and on the page in
Debian's Chromium: a batch dying after stage 2 of 5, a GPU hanging on a file while the others go idle,
a stage making no progress, the database going away.

``COFI_EVENTLOG_SCREENSHOT_DIR=docs`` keeps the pages of the hung GPU and the dead batch (SQLite runs) as
``dashboard-hung-gpu.png`` and ``dashboard-died.png``."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from dashboard_support import browser, serve
from playwright.sync_api import Browser, Page, expect
from staging import GPUS, ORCHESTRATOR, STAGES, Batch, files

from cofi_eventlog.cli import main

__all__ = ["browser", "serve"]  # fixtures
SHOTS = os.environ.get("COFI_EVENTLOG_SCREENSHOT_DIR")


def report(capsys: pytest.CaptureFixture[str], dsn: str, table: str, batch: str, *extra: str,
           code: int = 0) -> dict[str, Any]:
    assert main(["report", "--dsn", dsn, "--table", table, "--batch", batch, "--json", *extra]) == code
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def api(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def open_batch(browser: Browser, url: str, batch: str) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url + "batches/" + quote(batch, safe=""))
    page.locator("#state").wait_for(timeout=15_000)
    return page


def axis_end(page: Page) -> datetime:
    """The time the chart's axis ends at, read from its last label (HH:MM or HH:MM:SS, UTC)."""
    label = page.locator("svg.chart > text").last.text_content() or ""
    now = datetime.now(timezone.utc)
    parts = [int(p) for p in label.split(":")]
    return now.replace(hour=parts[0], minute=parts[1], second=parts[2] if len(parts) > 2 else 0, microsecond=0)


def shot(page: Page, name: str, dsn: str) -> None:
    if SHOTS and dsn.startswith("sqlite"):
        page.screenshot(path=str(Path(SHOTS) / name), full_page=True)


def test_a_batch_dying_after_stage_2_of_5(backend: tuple[str, str], browser: Browser, serve: Any,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The orchestrator raised after llm1: no batch_complete, nothing for 27 minutes. Before: completed,
    100.0%, and --fail-if-stalled exited 0."""
    dsn, table = backend
    names = files(16)
    died = Batch("nightly-died")
    died.start(1800, 16)
    end = died.stage("lid", names, 1795, 20)
    died.stage("llm1", names, end - 1, 20)
    died.write(dsn, table)
    undeclared = Batch("nightly-undeclared")  # the same, from a pipeline that declares no stages
    undeclared.start(1800, 16, stages=None)
    end = undeclared.stage("lid", names, 1795, 20)
    undeclared.stage("llm1", names, end - 1, 20)
    undeclared.write(dsn, table)

    shown = report(capsys, dsn, table, "nightly-died", "--fail-if-stalled", code=3)
    assert (shown["state"], shown["progress_pct"], shown["progress_of"]) == ("ended short", 40.0, "declared stages")
    assert [(s["stage"], s["state"], s["total"], s["waiting"]) for s in shown["stages"]] == [
        ("lid", "done", 16, 0), ("llm1", "done", 16, 0), ("llm2", "waiting", 16, 16), ("audit", "waiting", 16, 16),
        ("metadata", "waiting", 16, 16)]
    assert [g["gpu"] for g in shown["gpus"]] == GPUS  # the orchestrator's host is no GPU
    assert {g["state"] for g in shown["gpus"]} == {"idle"} and not any(g["stuck"] for g in shown["gpus"])
    assert report(capsys, dsn, table, "nightly-died", "--ended-after", "3600", "--fail-if-stalled",
                  code=3)["state"] == "stalled"  # within --ended-after: stalled, not yet given up
    quiet = report(capsys, dsn, table, "nightly-undeclared", "--fail-if-stalled", code=3)
    assert (quiet["state"], quiet["progress_pct"], quiet["progress_of"]) == ("unconfirmed", 99.9, "stages so far")

    server = serve("--dsn", dsn, "--table", table)
    page = open_batch(browser, server.url, "nightly-died")
    try:
        expect(page.locator("#state")).to_have_text("ended short")
        assert "the process that ran it is gone" in page.locator("#state-note").inner_text()
        assert page.locator("#progress").inner_text() == "40.0%"
        assert "the stages it declared" in page.locator("#progress-of").inner_text()
        states = {s: page.locator(f'#stages tr[data-stage="{s}"] .state').inner_text() for s in STAGES}
        assert states == {"lid": "done", "llm1": "done", "llm2": "waiting", "audit": "waiting", "metadata": "waiting"}
        assert page.locator("#gpus tr[data-gpu]").count() == 4
        assert page.locator(f'#gpus tr[data-gpu="{ORCHESTRATOR}"]').count() == 0
        assert page.locator("#gpus tr.stuck").count() == 0
        assert abs((axis_end(page) - datetime.now(timezone.utc)).total_seconds()) < 120  # the silence shows
        shot(page, "dashboard-died.png", dsn)
        page.goto(server.url + "batches/nightly-undeclared")
        expect(page.locator("#state")).to_have_text("unconfirmed", timeout=15_000)
        assert page.locator("#progress").inner_text() == "99.9%"
        assert "stages so far" in page.locator("#progress-of").inner_text()
    finally:
        page.close()


def stage_hung_gpu(dsn: str, table: str) -> tuple[Batch, str, str]:
    """Four GPUs, 4 s per file. lid: one file fails with a traceback. llm1: 10.0.0.13 started its last file
    92 s ago and hangs; the other three finished theirs 88 s ago and wait, idle."""
    names = files(32)
    b = Batch("nightly-hung")
    b.start(400, 32)
    failing = names[31]
    b.stage("lid", names, 395, 4, skip=(failing,))
    b.add(380, "file_start", "lid", failing, GPUS[3])
    b.add(379, "error", "lid", failing, GPUS[3], message="ValueError: audio too short: 0.24 s",
          metadata={"error_type": "ValueError", "traceback": 'Traceback (most recent call last):\n  File "lid.py", '
                    'line 12, in detect\n    raise ValueError(f"audio too short: {seconds} s")\n'
                    "ValueError: audio too short: 0.24 s\n"})
    hung = names[30]  # GPU index 30 % 4 = 2: 10.0.0.13, its eighth file
    b.stage("llm1", names[:31], 120, 4, said_complete=False, skip=(hung,))
    b.add(92, "file_start", "llm1", hung, GPUS[2])
    b.write(dsn, table)
    return b, hung, failing


def test_a_gpu_hanging_on_a_file_while_the_others_go_idle(backend: tuple[str, str], browser: Browser, serve: Any,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Before: nothing marked while it hung; later the idle GPUs and the orchestrator were marked quiet."""
    dsn, table = backend
    b, hung, failing = stage_hung_gpu(dsn, table)
    shown = report(capsys, dsn, table, b.batch)  # --quiet-after 60: the batch has been quiet 88 s
    assert shown["state"] == "stalled"
    gpus = {g["gpu"]: g for g in shown["gpus"]}
    assert list(gpus) == GPUS
    stuck = gpus[GPUS[2]]
    assert (stuck["state"], stuck["stuck"], stuck["in_flight"], stuck["current"]["file"],
            stuck["current"]["stage"]) == ("stuck", True, 1, hung, "llm1")
    assert 90 <= stuck["oldest_in_flight_seconds"] < 150
    for gpu in (GPUS[0], GPUS[1], GPUS[3]):
        assert (gpus[gpu]["state"], gpus[gpu]["in_flight"], gpus[gpu]["oldest_in_flight_seconds"],
                gpus[gpu]["stuck"]) == ("idle", 0, None, False)
    llm1 = shown["stages"][1]
    assert (llm1["stage"], llm1["state"], llm1["in_flight"], llm1["end"]) == ("llm1", "stalled", 1, None)
    assert llm1["eta_seconds"] is None and llm1["no_progress_seconds"] >= 88
    # events arriving (--quiet-after 300): the batch runs, and the GPU is stuck all the same, past 10 × its
    # usual 4 s per file
    running = report(capsys, dsn, table, b.batch, "--quiet-after", "300")
    assert running["state"] == "running" and [g["gpu"] for g in running["gpus"] if g["stuck"]] == [GPUS[2]]
    llm1 = running["stages"][1]  # 88 s without an outcome, where one came every 4 s: no ETA
    assert (llm1["state"], llm1["eta_seconds"]) == ("running", None) and llm1["no_progress_seconds"] >= 88

    server = serve("--dsn", dsn, "--table", table, "--quiet-after", "300")
    page = open_batch(browser, server.url, b.batch)
    try:
        expect(page.locator("#state")).to_have_text("running")
        row = page.locator("#gpus tr.stuck")
        expect(row).to_have_count(1)
        assert row.get_attribute("data-gpu") == GPUS[2]
        assert row.locator(".current .file").inner_text() == hung
        assert row.locator(".gpu-state").inner_text() == "stuck"
        assert row.locator(".age").inner_text().startswith("for 1m ")
        assert page.locator('#stages tr[data-stage="llm1"] td.eta').inner_text().startswith("no progress for 1m ")
        for gpu in (GPUS[0], GPUS[1], GPUS[3]):
            assert page.locator(f'#gpus tr[data-gpu="{gpu}"] .gpu-state').inner_text() == "idle"
        group = page.locator("#errors details").first
        group.locator("summary").click()
        group.locator("button.payload").first.click()
        trace = group.locator("pre.traceback").first
        trace.wait_for()
        lines = trace.inner_text().splitlines()  # real line breaks, not a JSON string's \n
        assert lines[0] == "Traceback (most recent call last):" and lines[-1].startswith("ValueError:")
        assert "\\n" not in trace.inner_text()
        href = page.locator("#failed-csv").get_attribute("href")
        assert href is not None
        status, body = api(server.url.rstrip("/") + href)
        assert status == 200
        rows = list(csv.reader(io.StringIO(body.decode())))
        assert rows == [["file", "stage", "gpu", "time_utc", "error_type", "message"],
                        [failing, "lid", GPUS[3], rows[1][3], "ValueError", "ValueError: audio too short: 0.24 s"]]
        shot(page, "dashboard-hung-gpu.png", dsn)
    finally:
        page.close()
    assert main(["report", "--dsn", dsn, "--table", table, "--batch", b.batch, "--failed"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(f"{failing},lid,{GPUS[3]},")


def test_a_stage_making_no_progress(backend: tuple[str, str], browser: Browser, serve: Any,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """llm2 completed 8 files, then each GPU started one 8 minutes ago and nothing came back. Before: ETA
    0.0 s from the stage's average rate, an end time, and a chart that stopped at the last event."""
    dsn, table = backend
    names = files(16)
    b = Batch("nightly-slow")
    b.start(1500, 16)
    end = b.stage("lid", names, 1490, 10)
    b.stage("llm1", names, end - 5, 10)
    b.stage("llm2", names[:8], 600, 20, said_complete=False)
    for k, gpu in enumerate(GPUS):
        b.add(480, "file_start", "llm2", names[8 + k], gpu)
    b.write(dsn, table)

    shown = report(capsys, dsn, table, b.batch, "--quiet-after", "900")
    llm2 = shown["stages"][2]
    assert (shown["state"], llm2["stage"], llm2["state"]) == ("running", "llm2", "running")
    assert (llm2["completed"], llm2["in_flight"], llm2["waiting"]) == (8, 4, 4)
    assert llm2["eta_seconds"] is None and llm2["recent_files_per_minute"] == 0 and llm2["end"] is None
    assert 560 <= llm2["no_progress_seconds"] < 620
    assert llm2["files_per_minute"] == 4  # the average, a whole number: 8 files over the stage's 2 minutes
    assert all(g["stuck"] for g in shown["gpus"])  # 8 minutes on a file that takes 20 s
    stalled = report(capsys, dsn, table, b.batch)
    assert stalled["state"] == "stalled" and stalled["stages"][2]["state"] == "stalled"
    assert stalled["stages"][2]["end"] is None and stalled["stages"][2]["seconds"] >= 600

    server = serve("--dsn", dsn, "--table", table, "--quiet-after", "900")
    page = open_batch(browser, server.url, b.batch)
    try:
        eta = page.locator('#stages tr[data-stage="llm2"] td.eta').inner_text()
        assert eta.startswith("no progress for 9m ") or eta.startswith("no progress for 10m "), eta
        assert page.locator('#stages tr[data-stage="llm2"] td.end').inner_text() == "-"
        assert page.locator('#stages tr[data-stage="llm2"] td.rate').inner_text() == "4"
        assert abs((axis_end(page) - datetime.now(timezone.utc)).total_seconds()) < 120
    finally:
        page.close()


def wait_stale(page: Page) -> None:
    expect(page.locator("#live")).to_contain_text("database not answering since", timeout=15_000)
    assert "figures from" in page.locator("#live").inner_text()
    assert "stale" in (page.locator("body").get_attribute("class") or "")


def wait_live(page: Page) -> None:
    expect(page.locator("#live")).to_contain_text("live", timeout=20_000)
    assert "stale" not in (page.locator("body").get_attribute("class") or "")


def stage_small(dsn: str, table: str) -> Batch:
    b = Batch("nightly-db")
    b.start(60, 8)
    b.stage("lid", files(8), 55, 2, said_complete=False)
    b.write(dsn, table)
    return b


def test_the_mariadb_server_going_away(table_name: str, browser: Browser, serve: Any, tmp_path: Path) -> None:
    """A private mariadbd, stopped while the page is open, then started again."""
    from servers import MARIADBD, Server, require, scratch

    require(MARIADBD)
    db = Server(scratch("cofi-dash-"), "gone")
    db.start()
    try:
        db.sql("CREATE DATABASE test")
        check_database_going_away(db.dsn(), table_name, browser, serve, stop=db.stop, start=db.start)
    finally:
        db.stop()


def test_the_sqlite_file_going_away(table_name: str, browser: Browser, serve: Any, tmp_path: Path) -> None:
    """The file moved away (a volume unmounted), then back."""
    path = tmp_path / "events.db"
    moved = tmp_path / "elsewhere.db"
    check_database_going_away(f"sqlite:///{path}", table_name, browser, serve,
                              stop=lambda: shutil.move(path, moved), start=lambda: shutil.move(moved, path))


def check_database_going_away(dsn: str, table: str, browser: Browser, serve: Any, *, stop: Any, start: Any) -> None:
    b = stage_small(dsn, table)
    server = serve("--dsn", dsn, "--table", table)
    page = open_batch(browser, server.url, b.batch)
    try:
        expect(page.locator("#events")).to_have_text(str(len(b.rows)), timeout=15_000)
        wait_live(page)
        stop()
        status, body = api(server.url + "api/batches/" + b.batch)
        assert status == 503 and json.loads(body)["error"]
        wait_stale(page)
        assert page.locator("#events").inner_text() == str(len(b.rows))  # the last figures stay, marked stale
        start()
        wait_live(page)
        assert api(server.url + "api/batches/" + b.batch)[0] == 200
    finally:
        page.close()


def test_recent_errors_are_bounded_and_bad_input_is_told(backend: tuple[str, str], serve: Any,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """6,000 errors in the last minutes: the list page counts them all but attributes only the newest
    2,000 to their batches, so neither the work nor the answer grows with a flood."""
    dsn, table = backend
    flood = Batch("flood")
    for i in range(6000):
        flood.add(600 - i * 0.05, "error", "lid", f"f{i}.wav", "10.0.0.1", message="boom")
    flood.rows[:50] = [(*r[:1], "other", *r[2:]) for r in flood.rows[:50]]  # the oldest 50 in another batch
    flood.write(dsn, table)
    server = serve("--dsn", dsn, "--table", table)
    status, body = api(server.url + "api/batches?limit=5")
    assert status == 200 and len(body) < 100_000
    recent = json.loads(body)["recent_errors"]
    assert (recent["errors"], recent["errors_more"], recent["sampled"]) == (6000, False, 2000)
    assert recent["batches"] == [{"batch": "flood", "errors": 2000, "last": recent["batches"][0]["last"]}]
    assert main(["report", "--dsn", dsn, "--table", table, "--errors-since", "15", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["errors"] == 6000
    status, body = api(server.url + "api/batches?limit=abc")
    assert status == 400 and json.loads(body) == {"error": "limit must be a whole number from 1 to 200"}


def test_long_silences_read_in_days_and_a_one_slot_chart_draws(tmp_path: Path, table_name: str, browser: Browser,
                                                               serve: Any, capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"sqlite:///{tmp_path / 'events.db'}"
    then = (datetime.now(timezone.utc) - timedelta(days=64, hours=15, minutes=5)).replace(microsecond=900_000)
    old = Batch("old", now=then)  # every event within one second: the chart has one slot
    old.start(0.8, 3, stages=["lid"])
    for i, name in enumerate(files(3)):
        old.add(0.7 - i * 0.2, "file_start", "lid", name, "10.0.0.1")
        old.add(0.6 - i * 0.2, "file_complete", "lid", name, "10.0.0.1")
    old.write(dsn, table_name)
    assert main(["report", "--dsn", dsn, "--table", table_name, "--batch", "old"]) == 0
    text = capsys.readouterr().out
    assert "COMPLETED" in text and "nothing for 64d 15h" in text  # its declared stage is done
    server = serve("--dsn", dsn, "--table", table_name)
    page = open_batch(browser, server.url, "old")
    try:
        assert page.locator("#state").inner_text() == "completed"
        assert "(64d 15h ago)" in page.locator(".summary").nth(1).inner_text()
        assert page.locator("svg.chart circle").count() == 1  # one slot, one point: drawn as a dot
    finally:
        page.close()


def test_idle_half_open_connections_do_not_hold_up_a_real_request(tmp_path: Path, table_name: str, serve: Any,
                                                                   record_property: Any) -> None:
    """300 connections that send half a request and wait, then a request with the right token; the server
    may open 256 files, as a default ulimit allows."""
    import socket

    dsn = f"sqlite:///{tmp_path / 'events.db'}"
    stage_small(dsn, table_name)
    token = "t0ken-for-the-abuse-test-1"
    server = serve("--dsn", dsn, "--table", table_name, env={"COFI_EVENTLOG_DASHBOARD_TOKEN": token},
                   max_files=256)
    host, port = server.url.split("//")[1].rstrip("/").split(":")
    idle = []
    try:
        for _ in range(300):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"GET /api/batches HTTP/1.1\r\nHost: x\r\n")  # no blank line: never complete
            idle.append(sock)
        started = time.perf_counter()
        request = urllib.request.Request(server.url + "api/batches/nightly-db",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = json.loads(answer.read())
        took = time.perf_counter() - started
        assert body["batch"] == "nightly-db"
        record_property("answer_seconds_under_300_idle", round(took, 4))
        print(f"\nanswer with 300 idle half-open connections: {took * 1000:.1f} ms")
        status, _ = api(server.url + "api/batches")  # no token: refused before any work
        assert status == 403
        assert server.process.poll() is None
    finally:
        for sock in idle:
            sock.close()
