"""64 paced worker processes against one MariaDB and against the tests' 3-node Galera cluster: what the
server takes from a pipeline's many workers at a worker's pace: with one writer and connection for the host
(the library's default), and with one per process.

Three targets: the shared server (COFI_EVENTLOG_TEST_DSN, by default 127.0.0.1:3306, with its own settings
and whatever other sessions do meanwhile), a private mariadbd set up as each Galera node is (tests/servers.py:
small buffer pool and logs, no binary log) with nothing else on it, and the 3-node cluster, written through
its first node.

Each run is ``cofi-eventlog simulate --workers 64 --file-seconds PACE --mode buffered`` for about 20 s:
rows/s and INSERT statements/s as the server counted them, the library's connections at once, the delay
from a call to its row being visible (median, p99), and the server's CPU per row: the mariadbd processes'
user + system time (/proc/<pid>/stat), sampled through the run and read over the span from the first
call to the last row visible. That CPU includes the run's own reading (the delay polls, about ten a
second): after the run the same reading is asked again and its CPU is given, to be taken out. On the shared
server it also includes whatever other sessions did meanwhile (their statements are in ``server_wide``);
the idle rate before the run is printed too.

64 processes load this 2-core machine for minutes, so the module runs only under ``--benchmark-only``.
The assertions are on counts (rows, losses, connections); the figures are printed, never asserted.
"""

from __future__ import annotations

import bisect
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cofi_eventlog.cli import main
from cofi_eventlog.database import Database
from cofi_eventlog.tools.simulate.pipeline import STAGES, Plan
from cofi_eventlog.tools.simulate.sampler import micros

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import Galera, Server, galera_cluster, scratch  # the tests' private servers

WORKERS = 64
SECONDS = 20.0  # of paced work per worker
PACES = (0.5, 0.05)  # seconds per file and stage
WRITERS = ("host", "process")  # the library's default, one writer for the host; and one per worker process
TICK = os.sysconf("SC_CLK_TCK")

pytestmark = [pytest.mark.slow, pytest.mark.mysql]


@pytest.fixture(autouse=True)
def _only_when_asked(request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("benchmark_only", False):
        pytest.skip("64 worker processes load the machine for minutes: run with --benchmark-only")


@pytest.fixture(scope="module")
def galera() -> Iterator[Galera]:
    cluster = galera_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def single() -> Iterator[Server]:
    """One private mariadbd with the Galera nodes' settings (tests/servers.py) and no other session."""
    server = Server(scratch("cofi-scale-"), "single")
    server.start()
    server.sql("CREATE DATABASE test")
    yield server
    server.stop()


def cpu_seconds(pid: int) -> float:
    """A process's user + system time, from /proc/<pid>/stat (fields 14 and 15, in clock ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def local_server_pid(dsn: str) -> int | None:
    """The shared server's mariadbd, when it runs on this machine; None otherwise."""
    with Database(dsn) as db:
        pid_file = str(db.scalar("SELECT @@pid_file"))
    try:
        pid = int(Path(pid_file).read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm in ("mariadbd", "mysqld") else None


class CpuSampler(threading.Thread):
    """The servers' CPU time every SAMPLE seconds, so that any span of the run can be read off afterwards."""

    SAMPLE = 0.2

    def __init__(self, pids: list[int]) -> None:
        super().__init__(name="server-cpu", daemon=True)
        self.pids = pids
        self.times: list[float] = []
        self.cpu: list[list[float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.times.append(time.time())
            self.cpu.append([cpu_seconds(pid) for pid in self.pids])
            self.halt.wait(self.SAMPLE)

    def over(self, start: float, end: float) -> list[float]:
        """Each server's CPU seconds between two wall-clock times, from the nearest samples."""
        first = max(bisect.bisect_right(self.times, start) - 1, 0)
        last = min(bisect.bisect_left(self.times, end), len(self.times) - 1)
        return [b - a for a, b in zip(self.cpu[first], self.cpu[last], strict=True)]

    def stop(self) -> None:
        self.halt.set()
        self.join()


def call_span(dsn: str, table: str, batch_id: str, delay_max: float) -> tuple[float, float]:
    """From the first call to the last row visible: the first and last createdAt, plus the longest delay."""
    with Database(dsn) as db:
        first, last = db.fetchall(f"SELECT MIN(createdAt), MAX(createdAt) FROM {db.name(table)} WHERE batchId = %s",
                                  (batch_id,))[0]
    return micros(first) / 1e6, micros(last) / 1e6 + delay_max


def bytes_per_row(dsn: str, table: str) -> float:
    """The table's data and indexes on disk per row, as InnoDB's statistics give them after ANALYZE TABLE."""
    with Database(dsn) as db:
        db.fetchall(f"ANALYZE TABLE {db.name(table)}")
        size, rows = db.fetchall("SELECT DATA_LENGTH + INDEX_LENGTH, TABLE_ROWS FROM information_schema.TABLES "
                                 "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", (table,))[0]
    return float(size) / max(int(rows), 1)


def replay_polls(dsn: str, table: str, batch_id: str, rows: int, delay: dict[str, Any]) -> None:
    """What the run's delay polls asked of the server, asked again: as many index rows read (the whole batch,
    over and over) and as many connection counts, so that their share of the server's CPU can be taken out."""
    with Database(dsn) as db:
        name = db.name(table)
        for _ in range(round(delay["rows_read"] / rows)):
            db.fetchall(f"SELECT eventId, createdAt FROM {name} WHERE batchId = %s AND createdAt >= %s",
                        (batch_id, "1970-01-01 00:00:00.000000"))
        for _ in range(delay["polls"]):
            db.fetchall(f"SELECT eventId, createdAt FROM {name} WHERE batchId = %s AND createdAt >= %s",
                        (batch_id, "9999-01-01 00:00:00.000000"))  # each poll's own statement, no rows
            db.fetchall("SELECT ID FROM information_schema.PROCESSLIST")
            db.fetchall("SHOW GLOBAL STATUS LIKE 'Threads_connected'")


def scale_run(benchmark: Any, summary: list[str], capsys: pytest.CaptureFixture[str], label: str, dsn: str,
              table: str, pids: list[int], pace: float, writer: str) -> dict[str, Any]:
    files = WORKERS * round(SECONDS / (len(STAGES) * pace))
    argv = ["simulate", "--dsn", dsn, "--table", table, "--files", str(files), "--workers", str(WORKERS),
            "--file-seconds", str(pace), "--writer", writer, "--mode", "buffered", "--json"]
    sampler = CpuSampler(pids)
    sampler.start()
    time.sleep(3.0)  # the servers' idle rate, before anything starts
    idle_end = time.time()
    try:
        code = benchmark.pedantic(main, args=(argv,), rounds=1)
        result = json.loads(capsys.readouterr().out)["buffered"]
        time.sleep(1.0)
        replay_start = time.time()
        replay_polls(dsn, table, result["batch_id"], result["rows_found"], result["paced"]["delay_seconds"])
        replay_end = time.time()
        time.sleep(2 * CpuSampler.SAMPLE)
    finally:
        sampler.stop()
    paced, events = result["paced"], Plan.make(files, 0.01).events()
    delay, connections = paced["delay_seconds"], paced["connections"]
    assert code == 0
    assert result["events"] == result["rows_inserted"] == result["rows_found"] == events
    assert result["lost"] == 0 and delay["rows_seen"] == events
    if writer == "process":  # one writer, and so one connection, per process
        assert connections["library_opened"] >= WORKERS
    else:  # one for the host (two for a moment, should the writer's process end while the next one starts)
        assert connections["library_at_once_max"] <= 2
    start, end = call_span(dsn, table, result["batch_id"], delay["max"])
    span = end - start
    server = sampler.over(start, end)
    idle = sampler.over(sampler.times[0], idle_end)
    idle_rate = sum(idle) / max(idle_end - sampler.times[0], 1e-9)
    polls = sum(sampler.over(replay_start, replay_end))
    rows, statements = result["rows_inserted"], result["insert_statements"]
    writing = sum(server) - polls
    figures = {
        "target": label, "workers": WORKERS, "writer": writer, "file_seconds": pace,
        "flush_interval": "default (0.5)",
        "events": events, "span_seconds": round(span, 2), "rows_per_second": round(rows / span, 1),
        "statements_per_second": round(statements / span, 1), "rows_per_statement": round(rows / statements, 2),
        "connections_at_once": connections["library_at_once_max"],
        "threads_above_baseline": connections["server_threads_above_baseline_max"],
        "delay_median": delay["median"], "delay_p99": delay["p99"], "delay_max": delay["max"],
        "server_cpu_seconds": [round(c, 2) for c in server],
        "server_cpu_us_per_row": round(sum(server) / rows * 1e6, 1) if pids else None,
        "server_cpu_polls_replayed_seconds": round(polls, 2) if pids else None,
        "server_cpu_us_per_row_without_polls": round(writing / rows * 1e6, 1) if pids else None,
        "server_cpu_share_of_a_core": round(sum(server) / span, 3) if pids else None,
        "server_idle_share_of_a_core": round(idle_rate, 3) if pids else None,
        "worker_cpu_us_per_event_after_first_stage": paced["worker_cpu_us_per_event_after_first_stage"],
        "server_wide": result["server_wide"], "statements": statements,
        "table_bytes_per_row": round(bytes_per_row(dsn, table)),
    }
    benchmark.extra_info.update(figures)
    cpu = (f"server CPU {sum(server) / rows * 1e6:,.0f} µs per row, {writing / rows * 1e6:,.0f} without the delay "
           f"polls' share ({sum(server) / span:.2f} of a core; idle {idle_rate:.2f})" if pids
           else "server CPU not measured (not a local server)")
    summary.append(f"{label}, {WORKERS} workers at {pace} s per file and stage, one writer per {writer}: "
                   f"{rows / span:,.0f} rows/s, "
                   f"{statements / span:,.1f} INSERT statements/s ({rows / statements:.1f} rows each), "
                   f"{connections['library_at_once_max']} connections at once, delay median {delay['median']:.2f} s "
                   f"p99 {delay['p99']:.2f} s, {cpu}; {json.dumps(figures)}")
    return figures


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("pace", PACES)
@pytest.mark.benchmark(group="64 paced workers")
def test_one_mariadb(benchmark: Any, summary: list[str], capsys: pytest.CaptureFixture[str], mysql_dsn: str,
                     new_table: Callable[[], str], pace: float, writer: str) -> None:
    pid = local_server_pid(mysql_dsn)
    scale_run(benchmark, summary, capsys, "MariaDB", mysql_dsn, new_table(), [pid] if pid else [], pace,
              writer)


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("pace", PACES)
@pytest.mark.benchmark(group="64 paced workers")
def test_private_mariadb(benchmark: Any, summary: list[str], capsys: pytest.CaptureFixture[str], single: Server,
                         pace: float, writer: str) -> None:
    """The same on a server of its own, set up as each Galera node is: nothing else runs on it."""
    assert single.process is not None
    scale_run(benchmark, summary, capsys, "MariaDB, private, the Galera nodes' settings", single.dsn(),
              f"scale_{time.monotonic_ns() % 10**12}", [single.process.pid], pace, writer)


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("pace", PACES)
@pytest.mark.benchmark(group="64 paced workers")
def test_galera_cluster(benchmark: Any, summary: list[str], capsys: pytest.CaptureFixture[str], galera: Galera,
                        pace: float, writer: str) -> None:
    table = f"scale_{time.monotonic_ns() % 10**12}"
    pids = [node.process.pid for node in galera.nodes if node.process is not None]
    try:
        scale_run(benchmark, summary, capsys, "Galera, 3 nodes, writes through node 1", galera.dsn(), table, pids,
                  pace, writer)
    finally:
        galera.nodes[0].sql(f"DROP TABLE IF EXISTS test.{table}")
