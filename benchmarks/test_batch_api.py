"""How fast the dashboard's batch API answers on a big table: 1M rows, of which one 10K-file batch
(99,600 events) and 90 older batches of 1K files, on MariaDB and on SQLite.

Each round asks ``GET /api/batches/big`` of a dashboard server running in this process:
- cold: the server has never seen the batch (what ``report`` always does): every statement runs;
- warm: the batch is unchanged since the last request, so only its fingerprint is read.
The list of the 20 most recent batches is timed warm. Figures are printed after the table; the
benchmarks assert the figures' content, never times.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from cofi_eventlog.database import Database
from cofi_eventlog.sinks import Row, open_sink, parse_dsn
from cofi_eventlog.tools.batchview import BatchViews
from cofi_eventlog.tools.dashboard.server import Dashboard, serve
from cofi_eventlog.tools.simulate.pipeline import STAGES, file_name

BIG_FILES, SMALL_FILES, SMALL_BATCHES = 10_000, 1_000, 90
GPUS = ("10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14")
GROUP = "batch API on a 1M-row table"

pytestmark = pytest.mark.slow


def batch_rows(batch: str, files: int, start_us: int, span_s: int, rng: random.Random) -> Iterator[Row]:
    """A batch as the library writes it: time-ordered eventIds; file i % 100 == 7 fails at one stage and
    leaves the batch (1% of the files)."""
    node, seq = rng.getrandbits(32), 0
    step = span_s * 1_000_000 // (files * len(STAGES) * 2)
    at = start_us
    for index, stage in enumerate(STAGES):
        for i in range(files):
            fails_at = (i // 100) % len(STAGES) if i % 100 == 7 else None
            if fails_at is not None and fails_at < index:
                continue
            name, gpu = file_name(i), GPUS[i % len(GPUS)]
            for kind in ("file_start", "file_complete"):
                message = metadata = None
                if kind == "file_complete" and fails_at == index:
                    kind, message = "error", f"audio too short: {rng.random():.2f} s"
                    metadata = orjson.dumps({"error_type": "ValueError", "payload": {"call_id": name}}).decode()
                seq += 1
                yield (((at * 1000) << 64 | node << 32 | seq).to_bytes(16, "big"), batch, stage, kind, name, message,
                       gpu, None, None, metadata, at)
                at += step


def fill(dsn: str, table: str) -> int:
    sink = open_sink(parse_dsn(dsn), table)
    rng = random.Random(1)
    now = int(time.time() * 1e6)
    written = 0
    chunk: list[Row] = []
    batches = [(f"hist-{b:03d}", SMALL_FILES, now - (SMALL_BATCHES - b + 1) * 3_600_000_000, 600)
               for b in range(SMALL_BATCHES)] + [("big", BIG_FILES, now - 1_800_000_000, 880)]
    for batch, files, start, span in batches:
        for row in batch_rows(batch, files, start, span, rng):
            chunk.append(row)
            if len(chunk) == 5000:
                sink.write(chunk)
                written, chunk = written + len(chunk), []
    sink.write(chunk)
    sink.close()
    return written + len(chunk)


@pytest.fixture(scope="module", params=["mysql", "sqlite"])
def big_table(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if request.param == "mysql":
        dsn, table = request.getfixturevalue("mysql_dsn"), f"bench_api_{random.getrandbits(32):08x}"
    else:
        dsn, table = f"sqlite:///{tmp_path_factory.mktemp('api') / 'big.db'}", "batchExecutionLog"
    try:
        assert fill(dsn, table) == 996_000
        with Database(dsn) as db:  # current statistics, as a server has them for a table of some age
            db.fetchall(f"ANALYZE TABLE {db.name(table)}") if db.dialect == "mysql" else db.execute("ANALYZE")
        yield dsn, table
    finally:
        if request.param == "mysql":
            with Database(dsn) as db:
                db.execute(f"DROP TABLE IF EXISTS {db.name(table)}")


@pytest.fixture(scope="module")
def server(big_table: tuple[str, str]) -> Iterator[tuple[Dashboard, str]]:
    dsn, table = big_table
    dashboard = Dashboard(dsn, table, None)
    http = serve(dashboard, "127.0.0.1", 0)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield dashboard, f"http://127.0.0.1:{http.server_address[1]}"
    http.shutdown()
    http.server_close()


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=60) as answer:
        found: dict[str, Any] = json.loads(answer.read())
        return found


def note(benchmark: Any, summary: list[str], what: str, dialect: str) -> None:
    if benchmark.disabled:
        return
    stats = benchmark.stats.stats
    summary.append(f"{what}, {dialect}: median {stats.median * 1000:.0f} ms, max {stats.max * 1000:.0f} ms "
                   f"({stats.rounds} rounds)")


@pytest.mark.benchmark(group=GROUP)
def test_batch_cold(benchmark: Any, summary: list[str], server: tuple[Dashboard, str],
                    big_table: tuple[str, str]) -> None:
    dashboard, base = server

    def forget() -> None:
        dashboard.views = BatchViews(dashboard.table)

    shown = benchmark.pedantic(get, args=(f"{base}/api/batches/big",), setup=forget, rounds=10, warmup_rounds=1)
    assert shown["events"] == 99_600 and shown["errors"] == 100
    assert shown["state"] == "unconfirmed"  # its rows declare no stages and log no batch_complete
    assert [s["completed"] for s in shown["stages"]] == [9980, 9960, 9940, 9920, 9900]
    assert [g["failed"] for g in shown["gpus"]] == [0, 0, 0, 100]
    note(benchmark, summary, "GET /api/batches/big, cold (1M-row table, 99,600-event batch)",
         parse_dsn(big_table[0]).dialect)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("path", ["/api/batches/big", "/api/batches"])
def test_warm(benchmark: Any, summary: list[str], server: tuple[Dashboard, str], big_table: tuple[str, str],
              path: str) -> None:
    """Asked again, nothing having changed: the batch page, and the list of the 20 most recent batches."""
    shown = benchmark.pedantic(get, args=(server[1] + path,), rounds=10, warmup_rounds=1)
    if path == "/api/batches":
        assert [b["batch"] for b in shown["batches"][:2]] == ["big", "hist-089"] and len(shown["batches"]) == 20
    else:
        assert shown["events"] == 99_600
    note(benchmark, summary, f"GET {path}, warm (unchanged since the last request)", parse_dsn(big_table[0]).dialect)


@pytest.mark.benchmark(group="dashboard assets")
def test_page_weight(benchmark: Any, summary: list[str]) -> None:
    """Bytes of HTML, JS and CSS the page loads (the JSON comes on top), and the time to load them at start."""
    from cofi_eventlog.tools.dashboard.server import load_assets

    sizes = {name: len(body) for name, (body, _) in benchmark(load_assets).items()}
    assert set(sizes) == {"index.html", "app.js", "app.css"}
    summary.append("page weight: " + ", ".join(f"{n} {b:,} B" for n, b in sizes.items()) +
                   f"; {sum(sizes.values()):,} B in all, uncompressed")


FLOOD = 500_000


@pytest.fixture(scope="module", params=["mysql", "sqlite"])
def flooded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """500,000 errors of 50 batches within the last 10 minutes, every one "recent" for the list page."""
    if request.param == "mysql":
        dsn, table = request.getfixturevalue("mysql_dsn"), f"bench_flood_{random.getrandbits(32):08x}"
    else:
        dsn, table = f"sqlite:///{tmp_path_factory.mktemp('flood') / 'flood.db'}", "batchExecutionLog"
    sink = open_sink(parse_dsn(dsn), table)
    start = int(time.time() * 1e6) - 600_000_000
    try:
        for first in range(0, FLOOD, 5000):
            sink.write([(((start + i * 1200) * 1000 << 64 | i).to_bytes(16, "big"), f"flood-{i % 50:02d}", "lid",
                         "error", f"f{i}.wav", "TimeoutError: llm did not answer", "10.0.0.11", None, None, None,
                         start + i * 1200) for i in range(first, first + 5000)])
        sink.close()
        yield dsn, table
    finally:
        if request.param == "mysql":
            with Database(dsn) as db:
                db.execute(f"DROP TABLE IF EXISTS {db.name(table)}")


@pytest.mark.benchmark(group="list page under an error flood")
def test_list_under_an_error_flood(benchmark: Any, summary: list[str], flooded: tuple[str, str]) -> None:
    """GET /api/batches?limit=1 with 500K errors in the last 15 minutes: the count stops at 100,000 and the
    newest 2,000 are attributed to batches, so the answer's time and size stay bounded."""
    dsn, table = flooded
    http = serve(Dashboard(dsn, table, None), "127.0.0.1", 0)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{http.server_address[1]}/api/batches?limit=1"
    try:
        def ask() -> bytes:
            with urllib.request.urlopen(url, timeout=60) as answer:
                body: bytes = answer.read()
                return body

        body = benchmark.pedantic(ask, rounds=5, warmup_rounds=1)
    finally:
        http.shutdown()
        http.server_close()
    recent = json.loads(body)["recent_errors"]
    assert (recent["errors"], recent["errors_more"], recent["sampled"]) == (100_000, True, 2000)
    if not benchmark.disabled:
        stats = benchmark.stats.stats
        summary.append(f"GET /api/batches?limit=1 with 500K recent errors, {parse_dsn(dsn).dialect}: median "
                       f"{stats.median * 1000:.0f} ms, {len(body):,} bytes")
