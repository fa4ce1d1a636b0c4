"""Crash durability and a full queue: SIGKILL in each mode, the on_full policies, the spool files."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import landed
from faultproxy import FaultProxy

from cofi_eventlog import EventLogger
from cofi_eventlog.database import Database
from cofi_eventlog.engine.spool import Spool, decode, encode
from cofi_eventlog.sinks.base import Row

KILLED_CHILD = r"""
import os, sys
from cofi_eventlog import EventLogger

dsn, table, spool_dir, durability = sys.argv[1:5]
log = EventLogger(dsn, table=table, spool_dir=spool_dir, durability=durability,
                  batch_size=1_000_000, flush_interval=3600)
for i in range(2000):
    log.file_started("kill", "lid", f"early-{i}")
assert log.flush(30)
os.write(1, b"flushed\n")
i = 0
while True:
    log.file_started("kill", "lid", f"late-{i}")
    os.write(1, b"%d\n" % i)  # after the call returned
    i += 1
"""


def run_and_kill(args: list[str], returned: int) -> set[int]:
    """Run the child until ``returned`` late calls have returned, SIGKILL it, and give back the
    numbers of every call it reported as returned."""
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, *args], stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline() == b"flushed\n"
    reported: set[int] = set()
    while len(reported) < returned:
        line = child.stdout.readline()
        assert line, "the child died before it was killed"
        reported.add(int(line))
    os.kill(child.pid, signal.SIGKILL)
    rest = child.stdout.read()
    child.wait(10)
    assert child.returncode == -signal.SIGKILL
    reported.update(int(line) for line in rest.split(b"\n") if line.strip().isdigit())
    return reported


def late_names(dsn: str, table: str) -> list[str]:
    with Database(dsn) as db:
        return [r[0] for r in db.fetchall(f"SELECT fileName FROM {db.name(table)} WHERE fileName LIKE %s",
                                          ("late-%",))]


def test_sigkill_in_spool_mode_loses_no_event_whose_call_returned(
        mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    reported = run_and_kill([mysql_dsn, mysql_table, spool_dir, "spool"], returned=3000)
    assert landed(mysql_dsn, mysql_table) == (2000, 2000, 2000)  # the late ones only reached the journal

    replayer = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir, durability="spool")
    assert replayer.flush(timeout=30)
    stats = replayer.stats()
    replayer.close()

    names = late_names(mysql_dsn, mysql_table)
    assert {f"late-{i}" for i in reported} <= set(names)
    rows, ids, files = landed(mysql_dsn, mysql_table)
    assert rows == ids == files == 2000 + len(names)  # each exactly once, the flushed ones included
    assert len(names) <= len(reported) + 1  # at most the call the kill interrupted
    assert stats["replayed"] >= len(reported)
    assert not list(Path(spool_dir).glob("*/*.seg"))


def test_sigkill_in_memory_mode_loses_what_was_queued_and_nothing_written(
        mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    """What docs/guarantees.md says a SIGKILL costs under durability='memory'."""
    run_and_kill([mysql_dsn, mysql_table, spool_dir, "memory"], returned=500)
    replayer = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir)
    assert replayer.flush(timeout=30)
    replayer.close()
    assert landed(mysql_dsn, mysql_table) == (2000, 2000, 2000)
    assert late_names(mysql_dsn, mysql_table) == []


def quiet_writer(dsn: str, table: str, spool_dir: str, **options: Any) -> EventLogger:
    """A logger whose writer sleeps until woken by flush(), so a test fills its queue exactly."""
    return EventLogger(dsn, table=table, spool_dir=spool_dir, max_queue=100, batch_size=1000,
                       flush_interval=3600, **options)


def test_on_full_spill_never_blocks_and_loses_nothing(mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    log = quiet_writer(mysql_dsn, mysql_table, spool_dir)
    for i in range(300):
        log.file_started("full", "lid", f"f{i}")
    stats = log.stats()
    assert (stats["queue_depth"], stats["spilled"], stats["dropped"]) == (100, 200, 0)
    assert log.flush(timeout=30)
    log.close()
    assert landed(mysql_dsn, mysql_table) == (300, 300, 300)


def test_on_full_drop_counts_every_drop_and_warns_at_a_limited_rate(
        mysql_dsn: str, mysql_table: str, spool_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    log = quiet_writer(mysql_dsn, mysql_table, spool_dir, on_full="drop")
    with caplog.at_level(logging.WARNING, logger="cofi_eventlog"):
        for i in range(300):
            log.file_started("full", "lid", f"f{i}")
    stats = log.stats()
    assert (stats["dropped"], stats["dropped_queue_full"], stats["spilled"]) == (200, 200, 0)
    assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == 1
    assert not log.flush(timeout=30)  # the kept 100 are written, but 200 events before the flush were dropped
    assert log.flush(timeout=30)  # nothing dropped since
    log.close()
    assert landed(mysql_dsn, mysql_table) == (100, 100, 100)


def test_on_full_block_waits_for_room_while_the_writer_keeps_up(
        mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    log = quiet_writer(mysql_dsn, mysql_table, spool_dir, on_full="block", block_timeout=30)
    for i in range(1000):
        log.file_started("full", "lid", f"f{i}")
    stats = log.stats()
    assert (stats["spilled"], stats["dropped"]) == (0, 0)
    assert log.flush(timeout=30)
    log.close()
    assert landed(mysql_dsn, mysql_table) == (1000, 1000, 1000)


def test_on_full_block_gives_up_at_its_deadline_and_spills(
        fault_proxy: FaultProxy, mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    fault_proxy.hang()  # the writer takes one batch and then waits on the database
    log = quiet_writer(fault_proxy.dsn, mysql_table, spool_dir, on_full="block", block_timeout=0.3, timeout=5)
    for i in range(200):  # the 101st call wakes the writer, which takes the first 100 and hangs
        log.file_started("full", "lid", f"f{i}")
    started = time.monotonic()
    log.file_started("full", "lid", "f200")
    blocked = time.monotonic() - started
    stats = log.stats()
    assert (stats["queue_depth"], stats["spilled"], stats["dropped"]) == (100, 1, 0)
    assert 0.25 <= blocked < 2.5, f"blocked {blocked:.2f}s with block_timeout=0.3"
    fault_proxy.restore()
    assert log.flush(timeout=30)
    log.close()
    assert landed(mysql_dsn, mysql_table) == (201, 201, 201)


def rows(n: int, tag: str = "r") -> list[Row]:
    return [(os.urandom(16), "b", "lid", "file_start", f"{tag}{i}", None, None, None, None, None,
             1_700_000_000_000_000 + i) for i in range(n)]


def test_a_torn_or_corrupt_tail_keeps_every_intact_record(tmp_path: Path) -> None:
    first, second = rows(3, "a"), rows(2, "b")
    data = encode(first) + encode(second)
    assert decode(data) == (first + second, 0)
    assert decode(data[:-5]) == (first, len(encode(second)) - 5)
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    assert decode(bytes(flipped)) == (first, len(encode(second)))


def test_a_segment_is_replayable_only_once_its_writer_lets_go(tmp_path: Path) -> None:
    writer = Spool(str(tmp_path), max_bytes=1 << 20)
    other = Spool(str(tmp_path), max_bytes=1 << 20)
    assert writer.spill(rows(5)) is None
    assert list(other.replayable()) == []  # locked by a live writer
    writer.close_spill()
    ((path, fd),) = list(other.replayable())
    assert len(Spool.read(fd)[0]) == 5
    assert list(writer.replayable()) == []  # one replayer at a time
    other.finish(path, fd)
    assert not path.exists() and list(writer.replayable()) == []


def test_the_spool_refuses_past_its_cap_and_says_why(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), max_bytes=len(encode(rows(10))) + 10)
    assert spool.spill(rows(10)) is None
    problem = spool.spill(rows(10))
    assert problem is not None and "spool full" in problem
    spool.close()
    assert Spool(str(tmp_path), max_bytes=1).bytes == len(encode(rows(10)))  # the cap counts what is on disk
