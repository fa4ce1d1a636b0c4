"""Crash durability and back-pressure: SIGKILL in each mode, the on_full policies, the journal files."""

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
from cofi_eventlog.engine.journal import Journal
from cofi_eventlog.engine.spool import Spool, SpoolFull

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


@pytest.mark.parametrize("durability", ["journal", "spool"])
def test_sigkill_loses_no_event_whose_call_returned(
        mysql_dsn: str, mysql_table: str, spool_dir: str, durability: str) -> None:
    reported = run_and_kill([mysql_dsn, mysql_table, spool_dir, durability], returned=3000)
    assert landed(mysql_dsn, mysql_table) == (2000, 2000, 2000)  # the late ones only reached the journal

    adopter = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir)
    assert adopter.flush(timeout=30)
    stats = adopter.stats()
    adopter.close()

    names = late_names(mysql_dsn, mysql_table)
    assert {f"late-{i}" for i in reported} <= set(names)
    rows, ids, files = landed(mysql_dsn, mysql_table)
    assert rows == ids == files == 2000 + len(names)  # each exactly once, the flushed ones included
    assert len(names) <= len(reported) + 1  # at most the call the kill interrupted
    assert stats["adopted"] >= len(reported)
    assert not list(Path(spool_dir).glob("*/*.jnl"))


def quiet_writer(dsn: str, table: str, spool_dir: str, **options: Any) -> EventLogger:
    """A logger whose writer sleeps until woken by flush(), so a test fills its queue exactly."""
    return EventLogger(dsn, table=table, spool_dir=spool_dir, max_queue=100, batch_size=1000,
                       flush_interval=3600, **options)


def test_on_full_spill_never_blocks_and_loses_nothing(mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    log = quiet_writer(mysql_dsn, mysql_table, spool_dir)
    for i in range(300):
        log.file_started("full", "lid", f"f{i}")
    stats = log.stats()
    assert (stats["unwritten"], stats["dropped"]) == (300, 0)
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
    assert (stats["dropped"], stats["dropped_queue_full"], stats["unwritten"]) == (200, 200, 100)
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
    assert log.stats()["dropped"] == 0
    assert log.flush(timeout=30)
    log.close()
    assert landed(mysql_dsn, mysql_table) == (1000, 1000, 1000)


def test_on_full_block_gives_up_at_its_deadline_and_keeps_the_event(
        fault_proxy: FaultProxy, mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    fault_proxy.hang()  # the writer tries the database and waits on it
    log = quiet_writer(fault_proxy.dsn, mysql_table, spool_dir, on_full="block", block_timeout=0.3, timeout=5)
    for i in range(100):
        log.file_started("full", "lid", f"f{i}")
    started = time.monotonic()
    log.file_started("full", "lid", "f100")  # 100 wait: this call blocks, then goes to the journal all the same
    blocked = time.monotonic() - started
    stats = log.stats()
    assert (stats["unwritten"], stats["dropped"]) == (101, 0)
    assert 0.25 <= blocked < 2.5, f"blocked {blocked:.2f}s with block_timeout=0.3"
    fault_proxy.restore()
    assert log.flush(timeout=30)
    log.close()
    assert landed(mysql_dsn, mysql_table) == (101, 101, 101)


def journal_with(folder: Path, records: list[bytes]) -> Journal:
    folder.mkdir(parents=True, exist_ok=True)
    journal = Journal.create(folder, "journal-1-1-1", 7 << 32, 1 << 16)
    for record in records:
        journal.append(record)
    return journal


CALL = b'["file_start","b","lid","%d.wav",null,null,null,null,null,null,1700000000000000000,%d]\n'


def test_a_record_cut_short_by_a_death_mid_copy_is_ignored_and_the_rest_kept(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, [CALL % (i, i) for i in range(3)])
    journal.map[journal.end:journal.end + 20] = (CALL % (3, 3))[:20]  # the copy the kill interrupted
    journal.release(remove=False)
    (orphan,) = Spool(str(tmp_path), max_bytes=1 << 30).orphans(set())
    assert orphan.node == 7 << 32 and orphan.torn_bytes() == 20
    data, count, _ = orphan.take(100)
    assert count == 3 and data.count(b"\n") == 3


def test_a_journal_is_adopted_only_once_its_process_lets_go(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, [CALL % (0, 0)])
    spool = Spool(str(tmp_path), max_bytes=1 << 30)
    assert list(spool.orphans(set())) == []  # locked by a live process
    journal.release(remove=False)
    (first,) = spool.orphans(set())
    assert list(Spool(str(tmp_path), max_bytes=1 << 30).orphans(set())) == []  # one adopter at a time
    first.release(remove=True)
    assert not list(tmp_path.glob("*.jnl"))


def test_a_file_named_like_a_journal_that_is_not_one_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / "journal-1-1-1.jnl").write_bytes(b"not a journal" * 1000)
    os.chmod(tmp_path, 0o700)
    assert list(Spool(str(tmp_path), max_bytes=1 << 30).orphans(set())) == []
    assert (tmp_path / "journal-1-1-1.jnl.bad").exists()


def test_an_unreadable_record_is_dead_lettered_and_the_others_land(
        tmp_path: Path, spool_dir: str) -> None:
    dsn = f"sqlite:///{tmp_path / 'u.db'}"
    folder = Path(EventLogger(dsn, spool_dir=spool_dir).spool_folder)
    journal_with(folder, [CALL % (0, 0), b"{not json\n", b"[1, 2]\n", CALL % (1, 1)]).release(remove=False)
    log = EventLogger(dsn, spool_dir=spool_dir)
    assert log.flush(10)
    stats = log.stats()
    log.close()
    assert (stats["adopted"], stats["written"], stats["dead_lettered"]) == (4, 2, 2)
    assert landed(dsn, "batchExecutionLog") == (2, 2, 2)


def test_the_spool_refuses_a_journal_past_its_cap_and_counts_the_drops(
        tmp_path: Path, spool_dir: str) -> None:
    log = EventLogger(f"sqlite:///{tmp_path / 'cap.db'}", spool_dir=spool_dir, max_spool_bytes=1 << 15,
                      batch_size=1_000_000, flush_interval=3600)
    with pytest.raises(SpoolFull):
        Spool(log.spool_folder, max_bytes=1 << 15).new_journal(1 << 32, 16 << 20)
    for i in range(10):
        log.file_started("cap", "lid", f"f{i}")
    stats = log.stats()
    log.close()
    assert stats["dropped_spool_full"] == 10 and stats["dropped"] == 10
