"""The host's shared writer, as a pipeline runs it: 24 long-running worker processes, each logging a few
events a second, against a private MariaDB whose ``max_connections`` is far below 24. The server sees one
connection of the library's; the events of every process land within a few flush intervals; the writer's
process is SIGKILLed mid-run and another takes over; nothing is lost or doubled. And without the shared
writer, "Too many connections" (1040) is back-pressure: waited out, counted, nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import landed
from crashkit import Run, alive, collect, count, wait_gone
from servers import MARIADBD, Server, require, scratch

from cofi_eventlog import EventLogger
from cofi_eventlog.database import Database
from cofi_eventlog.engine.leadership import holder

MAX_CONNECTIONS = 10  # MariaDB's least
FLUSH_INTERVAL = 0.5
WORKER = """
import json, os, random, time
import crashkit
from cofi_eventlog import EventLogger

crashkit.configure_from_environment(**json.loads(os.environ["PACED_OPTIONS"]))
batch, stop = os.environ["CRASHKIT_BATCH"], os.environ["PACED_STOP"]
i = 0
while not os.path.exists(stop):
    crashkit.log_returned(batch, f"{batch}/{os.getpid()}/e{i}")
    i += 1
    time.sleep(random.uniform(0.5, 1.5) * float(os.environ["PACED_SECONDS"]))
flushed = EventLogger.flush(timeout=60)
stats = EventLogger.stats()
print(json.dumps({"flushed": flushed, **{k: stats[k] for k in (
    "written", "written_for_others", "took_over", "too_many_connections", "writer_role", "dropped")}}))
"""


@pytest.fixture(scope="module")
def small_server() -> Iterator[Server]:
    """A private MariaDB that takes MAX_CONNECTIONS connections (and one more for root, as MariaDB does)."""
    require(MARIADBD)
    server = Server(scratch("cofi-small-"), "small", [f"--max-connections={MAX_CONNECTIONS}"])
    server.start()
    try:
        server.sql("CREATE DATABASE test")
        assert server.sql("SELECT @@max_connections") == [(MAX_CONNECTIONS,)]
        yield server
    finally:
        server.stop()


class Workers:
    """Paced worker processes, started at once, stopped together by a file."""

    def __init__(self, run: Run, n: int, seconds: float, **options: object) -> None:
        self.stop_file = run.ledger.parent / "stop"
        env = run.env(PACED_STOP=str(self.stop_file), PACED_SECONDS=str(seconds),
                      PACED_OPTIONS=json.dumps({"flush_interval": FLUSH_INTERVAL, "batch_size": 1000, **options}))
        self.procs = [subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True) for _ in range(n)]

    def finish(self) -> list[dict[str, object]]:
        """Stop the workers; each one's last line (its flush's answer and stats), the killed ones left out."""
        self.stop_file.touch()
        results = []
        for proc in self.procs:
            out, err = proc.communicate(timeout=120)
            if proc.returncode == -9:
                continue
            assert proc.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results

    def kill_all(self) -> None:
        wait_gone([p.pid for p in self.procs], timeout=0)


def library_connections(server: Server) -> int:
    """Connections to the server other than the ones this test opens to look."""
    rows = server.sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                      "WHERE ID <> CONNECTION_ID() AND COMMAND <> 'Daemon' AND USER = 'root'")
    return int(rows[0][0])


def writer_pid(spool: Path) -> int | None:
    for folder in spool.iterdir():
        for pid in holder(folder).values():
            return pid
    return None


def landed_names(run: Run, names: set[str]) -> set[str]:
    with Database(run.dsn) as db:
        found = {str(r[0]) for r in db.fetchall(f"SELECT fileName FROM {db.name(run.table)}")}
    return names & found


def wait_landed(run: Run, server: Server, seen: list[int], within: float) -> float:
    """Seconds until every call that had returned when this was called is in the table; fails past
    ``within``, naming which processes' events are missing. Notes the library's connections meanwhile."""
    names = set(run.returned())
    start = time.monotonic()
    while True:
        seen.append(library_connections(server))
        missing = names - landed_names(run, names)
        if not missing:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            pids = sorted({m.split("/")[1] for m in missing})
            raise AssertionError(f"{len(missing)} of {len(names)} returned calls not in the table after {within} s "
                                 f"(processes {pids[:10]})")
        time.sleep(0.1)


def test_24_paced_workers_share_one_connection_and_survive_the_writer_s_death(small_server: Server,
                                                                           tmp_path: Path) -> None:
    run = Run.make(tmp_path, small_server.dsn(), "paced24", "paced24")
    workers = Workers(run, 24, seconds=0.05)
    seen: list[int] = []
    try:
        run.wait_returned(24 * 20, timeout=60)
        took = wait_landed(run, small_server, seen, within=6 * FLUSH_INTERVAL)
        writer = writer_pid(Path(run.spool_dir))
        assert writer is not None and writer in {p.pid for p in workers.procs}
        os.kill(writer, 9)
        wait_gone([writer])
        deadline = time.monotonic() + 10
        while (successor := writer_pid(Path(run.spool_dir))) in (None, writer) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert successor not in (None, writer) and alive(successor)
        run.wait_returned(run.returned_count() + 24 * 20, timeout=60)  # a second at the workers' pace
        took_after = wait_landed(run, small_server, seen, within=6 * FLUSH_INTERVAL)
        results = workers.finish()
    finally:
        workers.kill_all()
    tally = count(run, "24 paced workers, writer SIGKILLed", flushed=collect(run))
    print(f"\n{tally.line()}; landed within {took:.2f} s before the kill, {took_after:.2f} s after; library "
          f"connections seen at most {max(seen)}; workers' stats: "
          f"{sum(int(r['took_over']) for r in results)} took over, "
          f"{sum(int(r['written_for_others']) for r in results)} written for others")
    assert tally.ok(), tally.line()
    assert max(seen) <= 2, seen
    assert len(results) == 23 and all(r["flushed"] for r in results)
    assert sum(int(r["too_many_connections"]) for r in results) == 0
    assert sum(int(r["written_for_others"]) for r in results) > 0  # someone wrote for the others after the kill


def test_without_the_shared_writer_too_many_connections_is_waited_out(small_server: Server, tmp_path: Path) -> None:
    """Other clients leave the server two free connections; eight processes write their own: 1040 is an
    outage like any other, counted, the idle connections are given back, and every event lands once."""
    others = [small_server.connect() for _ in range(MAX_CONNECTIONS - 1)]
    run = Run.make(tmp_path, small_server.dsn(), "own8", "own8")
    try:
        workers = Workers(run, 8, seconds=0.02, shared_writer=False, idle_timeout=1.0)
        try:
            run.wait_returned(8 * 50, timeout=60)
            results = workers.finish()
        finally:
            workers.kill_all()
    finally:
        for conn in others:
            conn.close()
    tally = count(run, "8 writers of their own, 2 connections free", flushed=collect(run))
    refused = sum(int(r["too_many_connections"]) for r in results)
    print(f"\n{tally.line()}; 1040 refusals counted: {refused}")
    assert tally.ok(), tally.line()
    assert all(r["flushed"] and r["writer_role"] == "own" for r in results)
    assert refused > 0


def test_two_loggers_of_one_target_share_the_writer_and_hand_it_over(tmp_path: Path) -> None:
    """The first logger to start writes; the second follows, its flush answered by the first's writes; when
    the first closes, the second takes over at once and writes its later events itself."""
    dsn, spool = f"sqlite:///{tmp_path / 'events.db'}", str(tmp_path / "spool")
    first = EventLogger(dsn, spool_dir=spool)
    second = EventLogger(dsn, spool_dir=spool)
    first.file_started("b", "lid", "first-0")
    assert first.flush(10)
    for i in range(100):
        second.file_started("b", "lid", f"second-{i}")
    assert second.flush(10)
    assert landed(dsn, "batchExecutionLog") == (101, 101, 101)
    assert (first.stats()["writer_role"], second.stats()["writer_role"]) == ("host", "follower")
    assert first.stats()["written_for_others"] == 100
    assert (second.stats()["written"], second.stats()["unwritten"]) == (100, 0)
    first.close()
    for i in range(100, 150):
        second.file_started("b", "lid", f"second-{i}")
    assert second.flush(10)
    stats = second.stats()
    second.close()
    assert landed(dsn, "batchExecutionLog") == (151, 151, 151)
    assert (stats["writer_role"], stats["took_over"], stats["written"]) == ("host", 1, 150)


def test_a_follower_s_flush_waits_for_the_orphans_too(tmp_path: Path) -> None:
    """flush() means the same in a process that does not write: its events and the journals of processes
    that were gone when it was called are in the database. The follower's one event goes with the first of
    the orphan's five statements; its flush still waits for all five."""
    dsn, spool = f"sqlite:///{tmp_path / 'events.db'}", str(tmp_path / "spool")
    writer = EventLogger(dsn, spool_dir=spool)
    follower = EventLogger(dsn, spool_dir=spool)
    writer.file_started("b", "lid", "writer-0")
    assert writer.flush(10)  # started first, so it holds the writer lock
    follower.file_started("b", "lid", "follower-0")
    assert follower.flush(10)
    dead = subprocess.run([sys.executable, "-c", f"""
import os, time
from cofi_eventlog import EventLogger
log = EventLogger({dsn!r}, spool_dir={spool!r}, flush_interval=60, batch_size=100000, shared_writer=False)
for i in range(20000):
    log.file_started("b", "lid", f"dead-{{i}}")
time.sleep(1.5)  # its journal no longer new: the writer finds it at the next ask, not at once
os.kill(os.getpid(), 9)
"""])
    assert dead.returncode == -9
    follower.file_started("b", "lid", "follower-1")
    assert follower.flush(10) and follower.stats()["writer_role"] == "follower"
    assert landed(dsn, "batchExecutionLog") == (20003, 20003, 20003)
    follower.close()
    writer.close()
