"""`cofi-eventlog dashboard` in a real browser (Debian's Chromium driven by playwright), against a real
dashboard process on MariaDB and SQLite: figures against the database, live updates without a reload,
hostile stored text shown as text, SELECT statements only, nothing fetched from elsewhere."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from dashboard_support import browser, serve
from playwright.sync_api import Browser, Page, expect

from cofi_eventlog import EventLogger
from cofi_eventlog.database import Database
from cofi_eventlog.sinks import mysql_connect

__all__ = ["browser", "serve"]  # fixtures
HOSTILE_FILE = '<img src=x onerror="window.__pwned=1">.wav'
HOSTILE_MESSAGE = "<script>window.__pwned=2</script> failed"
HOSTILE_PAYLOAD = "<img src=x onerror=window.__pwned=3>"


class QueryRecorder:
    """A TCP relay in front of MariaDB that keeps the text of every COM_QUERY the clients send, one list
    per connection."""

    def __init__(self, target_dsn: str) -> None:
        parts = urlsplit(target_dsn)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 3306)
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        credentials = parts.netloc.rpartition("@")[0]
        self.dsn = urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{port}"))
        self.connections: list[list[str]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            self.connections.append([])
            threading.Thread(target=self._pipe, args=(client, upstream, self.connections[-1]), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, statements: list[str] | None) -> None:
        pending = b""
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
                if statements is not None:
                    pending += data
                    while len(pending) >= 4 and len(pending) >= 4 + int.from_bytes(pending[:3], "little"):
                        size = int.from_bytes(pending[:3], "little")
                        packet, pending = pending[4:4 + size], pending[4 + size:]
                        if packet[:1] == b"\x03":  # COM_QUERY
                            statements.append(packet[1:].decode("utf-8", "replace"))
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


def log_hostile_batch(dsn: str, table: str, batch: str) -> None:
    """Two stages on two GPUs; errors whose file name, message and payload are markup; one file in flight."""
    with EventLogger(dsn, table=table) as log:
        for stage in ("lid", "llm1"):
            for i in range(12):
                name, gpu = (HOSTILE_FILE if i == 3 else f"f{i:02d}.wav"), f"10.0.0.{11 + i % 2}"
                log.file_started(batch, stage, name, gpu)
                if i == 3:
                    log.file_error(batch, stage, name, HOSTILE_MESSAGE, gpu, payload={"note": HOSTILE_PAYLOAD})
                elif not (stage == "llm1" and i == 11):
                    log.file_completed(batch, stage, name, gpu)
        assert log.flush(10)


def db_figures(dsn: str, table: str, batch: str) -> tuple[int, dict[str, dict[str, int]]]:
    """The batch's events, and per stage its file events by type, counted by the database."""
    with Database(dsn) as db:
        t = db.name(table)
        events = int(db.scalar(f"SELECT COUNT(*) FROM {t} WHERE batchId = %s", (batch,)))
        stages: dict[str, dict[str, int]] = {}
        for stage, etype, n in db.fetchall(f"SELECT stage, eventType, COUNT(*) FROM {t} WHERE batchId = %s "
                                           "GROUP BY stage, eventType", (batch,)):
            stages.setdefault(stage, {})[etype] = int(n)
    return events, stages


def cells(page: Page, stage: str) -> dict[str, str]:
    row = page.locator(f'#stages tr[data-stage="{stage}"]')
    return {k: row.locator(f"td.{k}").inner_text() for k in ("total", "completed", "failed", "in_flight", "waiting")}


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    for suffix in ("", "-wal"):
        if os.path.exists(path + suffix):
            digest.update(Path(path + suffix).read_bytes())
    return digest.hexdigest()


def test_batch_page_figures_live_updates_hostile_text_and_select_only(
        backend: tuple[str, str], browser: Browser, serve: Any) -> None:
    dsn, table = backend
    batch = "b-<b>dash</b>"
    log_hostile_batch(dsn, table, batch)
    recorder = QueryRecorder(dsn) if dsn.startswith("mysql") else None
    sqlite_path = None if recorder else urlsplit(dsn).path[1:]
    before = file_digest(sqlite_path) if sqlite_path else ""
    server = serve("--dsn", recorder.dsn if recorder else dsn, "--table", table)
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(server.url + "batches/" + quote(batch, safe=""))
        events, stages = db_figures(dsn, table, batch)
        expect(page.locator("#events")).to_have_text(str(events), timeout=15_000)
        assert page.locator("#batch-id").inner_text() == batch  # markup in a batch id is text too
        assert page.locator("#state").inner_text() == "running"
        assert cells(page, "lid") == {"total": "12", "completed": str(stages["lid"]["file_complete"]),
                                      "failed": "1", "in_flight": "0", "waiting": "0"}
        assert cells(page, "llm1") == {"total": "12", "completed": str(stages["llm1"]["file_complete"]),
                                       "failed": "1", "in_flight": "1", "waiting": "0"}
        assert page.locator("#gpus tr[data-gpu]").count() == 2
        assert page.locator("#errors-total").inner_text() == str(stages["lid"]["error"] + stages["llm1"]["error"])

        group = page.locator("#errors details").first
        group.locator("summary").click()
        assert HOSTILE_MESSAGE in group.locator("pre.message").first.inner_text()
        assert HOSTILE_FILE in group.locator(".file").first.inner_text()
        group.locator("button.payload").first.click()
        payload = group.locator("pre.payload").first
        payload.wait_for()
        assert json.loads(payload.inner_text())["payload"] == {"note": HOSTILE_PAYLOAD}
        assert page.evaluate("window.__pwned") is None
        assert page.locator("img").count() == 0
        assert page.evaluate("[...document.scripts].map(s => s.getAttribute('src'))") == ["/static/app.js"]
        if sqlite_path:
            assert file_digest(sqlite_path) == before  # reading changed nothing

        page.evaluate("window.__sameDocument = true")
        with EventLogger(dsn, table=table) as log:
            for i in range(5):
                log.file_started(batch, "llm2", f"f{i:02d}.wav", "10.0.0.13")
                log.file_completed(batch, "llm2", f"f{i:02d}.wav", "10.0.0.13")
        events_now, _ = db_figures(dsn, table, batch)
        assert events_now == events + 10
        expect(page.locator("#events")).to_have_text(str(events_now), timeout=15_000)
        assert page.evaluate("window.__sameDocument") is True  # updated in place, no reload
        assert page.locator('#stages tr[data-stage="llm2"] td.completed').inner_text() == "5"
        assert page.locator("#gpus tr[data-gpu]").count() == 3
        assert group.locator("pre.payload").count() == 1  # an opened group stays open across updates
        assert all(url.startswith(server.url) for url in requests), requests  # works offline
    finally:
        page.close()
        server.stop()
        if recorder:
            recorder.close()
    if recorder:  # each connection: its session settings (the driver's SET NAMES, then UTC and strict mode,
        assert len(recorder.connections) > 3  # and a SHOW of the server's limits), then SELECTs only
        for statements in recorder.connections:
            assert statements[0] == "SET NAMES utf8mb4"
            assert statements[1] == mysql_connect.SESSION and statements[2].startswith("SHOW VARIABLES")
            others = [s[:60] for s in statements[3:] if not re.match(r"[\s(]*(SELECT|WITH)\b", s, re.IGNORECASE)]
            assert not others and len(statements) > 3


def test_recent_batches_list_and_its_links(tmp_path: Path, table_name: str, browser: Browser, serve: Any) -> None:
    dsn = f"sqlite:///{tmp_path / 'events.db'}"
    with EventLogger(dsn, table=table_name) as log:
        log.batch_started("older", total_files=2)
        for name in ("a.wav", "b.wav"):
            log.file_started("older", "lid", name, "10.0.0.1")
            log.file_completed("older", "lid", name, "10.0.0.1")
        log.batch_completed("older")
        log.file_started("newer", "lid", "c.wav", "10.0.0.2")
        log.file_error("newer", "lid", "c.wav", "boom", "10.0.0.2")
    server = serve("--dsn", dsn, "--table", table_name)
    page = browser.new_page()
    try:
        page.goto(server.url)
        page.locator("#batches tr[data-batch]").nth(1).wait_for()
        rows = page.locator("#batches tr[data-batch]")
        assert [rows.nth(i).get_attribute("data-batch") for i in range(2)] == ["newer", "older"]
        older = page.locator('#batches tr[data-batch="older"]')
        assert older.locator(".state").inner_text() == "completed" and older.locator("td.pct").inner_text() == "100.0%"
        assert page.locator('#batches tr[data-batch="newer"] td.errors').inner_text() == "1"
        assert page.locator("#recent-errors").inner_text() == "1"
        assert page.locator("#recent-line").inner_text() == "Errors in the last 15 minutes, all batches: 1 — newer (1)"
        assert page.locator("#recent-line a").get_attribute("href") == "/batches/newer"
        older.locator("a.batch").click()
        page.wait_for_url(server.url + "batches/older")
        page.locator("#state").wait_for()
        assert page.locator("#state").inner_text() == "completed"
    finally:
        page.close()


def fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}, method=method), timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_safe_by_default(tmp_path: Path, table_name: str, serve: Any) -> None:
    dsn = f"sqlite:///{tmp_path / 'events.db'}"
    with EventLogger(dsn, table=table_name) as log:
        log.file_completed("b1", "lid", "a.wav", "10.0.0.1")
    refused = subprocess.run([sys.executable, "-m", "cofi_eventlog", "dashboard", "--dsn", dsn, "--table", table_name,
                              "--host", "0.0.0.0"], capture_output=True, text=True, timeout=30,
                             env={k: v for k, v in os.environ.items() if k != "COFI_EVENTLOG_DASHBOARD_TOKEN"})
    assert refused.returncode == 2 and "give a token" in refused.stderr

    open_server = serve("--dsn", dsn, "--table", table_name)
    status, headers, _ = fetch(open_server.url)
    assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert fetch(open_server.url + "api/batches", {"Host": "attacker.example:8050"})[0] == 403  # DNS rebinding
    assert fetch(open_server.url + "api/batches", method="POST")[0] == 405
    status, _, body = fetch(open_server.url + "api/batches/b1")
    assert status == 200 and json.loads(body)["events"] == 1
    assert fetch(open_server.url + "api/batches/nope")[0] == 404

    token = "t0ken-for-the-test-123"
    guarded = serve("--dsn", dsn, "--table", table_name, env={"COFI_EVENTLOG_DASHBOARD_TOKEN": token})
    assert fetch(guarded.url + "api/batches")[0] == 403
    assert fetch(guarded.url + "api/batches", {"Authorization": "Bearer wrong-token-0000000"})[0] == 403
    assert fetch(guarded.url + "api/batches", {"Authorization": f"Bearer {token}"})[0] == 200
    status, headers, _ = fetch(guarded.url + f"batches/b1?token={token}")
    assert status == 303 and headers["Location"] == "/batches/b1" and "HttpOnly" in headers["Set-Cookie"]
    cookie = headers["Set-Cookie"].split(";")[0]
    assert fetch(guarded.url + "static/app.js", {"Cookie": cookie})[0] == 200
    assert fetch(guarded.url + "static/app.js", {"Cookie": "cofi_eventlog_token=nope"})[0] == 403


def test_a_simulate_batch_followed_to_its_end(tmp_path: Path, table_name: str, browser: Browser, serve: Any) -> None:
    """A real ``simulate`` batch (five stages, two workers on two GPUs, failures) watched while it runs and
    until it completes. Its legacy shape writes one row per INSERT, so the batch lasts a few seconds.
    ``COFI_EVENTLOG_SCREENSHOT=docs/dashboard.png`` keeps the picture taken mid-run (from a 20,000-file run)."""
    keep = os.environ.get("COFI_EVENTLOG_SCREENSHOT")
    files = 20_000 if keep else 400
    dsn = f"sqlite:///{tmp_path / 'simulate.db'}"
    with Database(dsn) as db:
        db.create_events_table(table_name)
    run = subprocess.Popen([sys.executable, "-m", "cofi_eventlog", "simulate", "--mode", "legacy", "--workers", "2",
                            "--files", str(files), "--failure-rate", "0.02", "--dsn", dsn, "--table", table_name],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = serve("--dsn", dsn, "--table", table_name, "--quiet-after", "3")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with Database(dsn) as db:
                rows, batch = db.fetchall(f"SELECT COUNT(*), MAX(batchId) FROM {db.name(table_name)}")[0]
            if rows > files * 10 * 0.7 or run.poll() is not None:
                break
            time.sleep(0.1)
        page.goto(server.url + "batches/" + quote(str(batch), safe=""))
        expect(page.locator("#state")).to_have_text("running", timeout=10_000)
        expect(page.locator("#gpus tr[data-gpu]")).to_have_count(2)
        assert page.locator("#stages tr[data-stage]").count() >= 3
        group = page.locator("#errors details").first
        group.locator("summary").click()
        opened = group.get_attribute("data-key")
        if keep:
            page.screenshot(path=keep, full_page=True)
        assert run.wait(300) == 0  # the legacy shape declares no stages and logs no batch_complete:
        expect(page.locator("#state")).to_have_text("unconfirmed", timeout=20_000)  # nothing says it finished
        assert "never logged batch_complete" in page.locator("#state-note").inner_text()
        expect(page.locator("#stages tr[data-stage]")).to_have_count(5)
        events = int(page.locator("#events").inner_text().replace(",", ""))
        with Database(dsn) as db:
            assert events == int(db.scalar(f"SELECT COUNT(*) FROM {db.name(table_name)} WHERE batchId = %s", (batch,)))
        still_open = page.evaluate("key => [...document.querySelectorAll('#errors details')]"
                                   ".find(d => d.dataset.key === key).open", opened)
        assert still_open  # the group opened stays open through the redraws
    finally:
        page.close()
        if run.poll() is None:
            run.kill()
            run.wait()


def test_without_chromium_the_browser_tests_skip_saying_how_to_install_it_and_fail_under_ci() -> None:
    """A fresh machine: the README's test command passes, the browser tests skipped with the way to install
    Chromium; CI (CI=true) fails instead of skipping."""
    base = {k: v for k, v in os.environ.items() if k != "CI"}
    base["COFI_EVENTLOG_TEST_CHROMIUM"] = "/nonexistent/chromium"
    argv = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
            f"{Path(__file__).name}::test_recent_batches_list_and_its_links"]
    fresh = subprocess.run(argv, cwd=Path(__file__).parent, env=base, capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stdout
    assert "SKIPPED [1]" in fresh.stdout and "apt-get install chromium" in fresh.stdout
    ci = subprocess.run(argv, cwd=Path(__file__).parent, env={**base, "CI": "true"}, capture_output=True, text=True,
                        timeout=120)
    assert ci.returncode == 1 and "CI=true forbids skipping" in ci.stdout
