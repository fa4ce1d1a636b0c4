"""The spool folder as the last copy: found again after the credentials change, never deleted unwritten,
never trusted when someone else made it; a dead-letter file that cannot be written costs one row,
counted; and ``cofi-eventlog spool`` on a real leftover journal."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import landed
from faultproxy import FaultProxy
from servers import Server, scratch

from cofi_eventlog import EventLogger
from cofi_eventlog.database import Database
from cofi_eventlog.engine.journal import Journal
from cofi_eventlog.engine.spool import Spool

pytestmark = pytest.mark.mysql

QUIET = {"batch_size": 1_000_000, "flush_interval": 3600.0}


def poisoned(dsn: str, table: str) -> None:
    """The events table, refusing one file name (MariaDB error 4025, a row the database will never take)."""
    with Database(dsn) as db:
        db.create_events_table(table)
        db.execute(f"ALTER TABLE {db.name(table)} ADD CONSTRAINT no_poison CHECK (fileName <> 'poison')")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cofi_eventlog", *args], capture_output=True, text=True,
                          timeout=120)


def test_a_spool_is_found_again_after_the_password_and_the_host_name_change(
        mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    wrong = mysql_dsn.replace("root@127.0.0.1", "root:wrong-pw@127.0.0.1")
    first = EventLogger(wrong, table=mysql_table, spool_dir=spool_dir)
    for i in range(1000):
        first.file_started("cred", "lid", f"f{i}")
    assert not first.flush(timeout=2)
    first.close()
    assert first.stats()["unwritten"] == 1000

    right = EventLogger(mysql_dsn.replace("127.0.0.1", "localhost"), table=mysql_table, spool_dir=spool_dir)
    assert right.spool_folder == first.spool_folder
    assert right.flush(timeout=30)
    right.close()
    assert landed(mysql_dsn, mysql_table) == (1000, 1000, 1000)


@pytest.mark.parametrize("broken", ["impossible folder", "dead-letter file is a folder"])
def test_a_dead_letter_that_cannot_be_written_costs_that_row_alone_and_flush_answers(
        mysql_dsn: str, mysql_table: str, tmp_path: Path, broken: str) -> None:
    poisoned(mysql_dsn, mysql_table)
    if broken == "impossible folder":
        (tmp_path / "file").write_text("")
        spool_dir = str(tmp_path / "file" / "spool")  # under a regular file: cannot be made
    else:
        spool_dir = str(tmp_path / "spool")
        Path(EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir).spool_folder,
             "dead-letter.jsonl").mkdir(parents=True)
    log = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir, **QUIET)  # type: ignore[arg-type]
    for i in range(100):
        log.file_started("dl", "lid", "poison" if i == 37 else f"f{i}")
    answer: list[bool] = []
    flusher = threading.Thread(target=lambda: answer.append(log.flush()))  # no timeout: it must be answered
    flusher.start()
    flusher.join(60)
    assert answer == [False]  # one event is lost, and flush says so
    stats = log.stats()
    log.close()
    assert (stats["dropped_dead_letter"], stats["dropped"], stats["dead_lettered"]) == (1, 1, 0)
    assert landed(mysql_dsn, mysql_table) == (99, 99, 99)


def test_an_unusable_spool_folder_keeps_events_in_memory_and_says_so(
        fault_proxy: FaultProxy, mysql_dsn: str, mysql_table: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    fault_proxy.cut()
    log = EventLogger(fault_proxy.dsn, table=mysql_table, spool_dir=str(tmp_path / "file" / "x"))
    with caplog.at_level("WARNING", logger="cofi_eventlog"):
        for i in range(50):
            log.file_started("down", "lid", f"f{i}")
        assert not log.flush(timeout=2)
    stats = log.stats()
    assert (stats["not_journaled"], stats["unwritten"], stats["dropped"]) == (50, 50, 0)
    assert "kept in memory only" in " ".join(r.getMessage() for r in caplog.records)
    fault_proxy.restore()
    assert log.flush(timeout=30)
    log.close()
    assert landed(mysql_dsn, mysql_table) == (50, 50, 50)


def test_the_journal_is_never_deleted_unwritten_when_the_spool_is_at_its_cap(
        fault_proxy: FaultProxy, mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    """Spool mode, database down, a cap that one small journal fits in."""
    fault_proxy.cut()
    log = EventLogger(fault_proxy.dsn, table=mysql_table, spool_dir=spool_dir, durability="spool",
                      max_spool_bytes=128 * 1024, batch_size=1000, flush_interval=0.05)
    for i in range(100):
        log.file_started("journal", "lid", f"f{i}")
    assert not log.flush(timeout=2)
    log.close()
    assert (log.stats()["not_journaled"], log.stats()["dropped"]) == (0, 0)

    later = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir)
    assert later.flush(timeout=30)
    later.close()
    assert landed(mysql_dsn, mysql_table) == (100, 100, 100)


def test_last_error_is_cleared_once_the_database_is_back(
        fault_proxy: FaultProxy, mysql_table: str, spool_dir: str) -> None:
    log = EventLogger(fault_proxy.dsn, table=mysql_table, spool_dir=spool_dir)
    fault_proxy.cut()
    log.file_started("b", "lid", "f0")
    assert not log.flush(timeout=2)
    assert "2003" in str(log.stats()["last_error"]) or "2013" in str(log.stats()["last_error"])
    fault_proxy.restore()
    log.file_started("b", "lid", "f1")
    assert log.flush(timeout=30)
    assert log.stats()["last_error"] is None
    log.close()


def test_a_planted_spool_folder_is_not_trusted(
        mysql_dsn: str, mysql_table: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Someone else's spool_dir: loose permissions, a linked dead-letter file, a FIFO and a foreign
    journal named like ours. Nothing follows the link, nothing hangs, nothing foreign is written."""
    poisoned(mysql_dsn, mysql_table)
    spool_dir = str(tmp_path / "shared")
    folder = Path(EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir).spool_folder)
    folder.mkdir(parents=True, mode=0o777)
    os.chmod(folder, 0o777)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (folder / "dead-letter.jsonl").symlink_to(victim)
    os.mkfifo(folder / "journal-1-1-1.jnl")
    (tmp_path / "forge").mkdir(mode=0o700)
    forged = Journal.create(tmp_path / "forge", "journal-2-2-2", 1 << 32, 1 << 16)  # well-formed, someone else's
    forged.append(b'["error","forged",null,"x",null,null,null,null,null,null,1,1]\n')
    forged.release(remove=False)
    os.rename(tmp_path / "forge" / "journal-2-2-2.jnl", folder / "journal-2-2-2.jnl")
    os.chown(folder / "journal-2-2-2.jnl", 65534, 65534)

    log = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir, **QUIET)  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="cofi_eventlog"):
        for i in range(10):
            log.file_started("planted", "lid", "poison" if i == 3 else f"f{i}")
        assert not log.flush(timeout=30)  # the poisoned row could not be dead-lettered: counted, said
    stats = log.stats()
    log.close()
    assert (folder.stat().st_mode & 0o777) == 0o700
    assert victim.read_text() == "keep me\n"
    assert stats["dropped_dead_letter"] == 1
    assert landed(mysql_dsn, mysql_table) == (9, 9, 9)  # nothing of the forged journal
    assert (folder / "journal-2-2-2.jnl").exists() and (folder / "journal-1-1-1.jnl").exists()
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "open to other users" in said and "journal-1-1-1.jnl skipped" in said
    assert "journal-2-2-2.jnl skipped" in said


def test_a_spool_folder_owned_by_another_user_is_refused(mysql_dsn: str, mysql_table: str, tmp_path: Path) -> None:
    spool_dir = str(tmp_path / "shared")
    folder = Path(EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir).spool_folder)
    folder.mkdir(parents=True)
    os.chown(folder, 65534, 65534)
    with pytest.raises(Exception, match="belongs to uid 65534"):
        EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir, preflight=True)


SHORT_WRITE = r"""
import os, resource, signal, sys
from cofi_eventlog import EventLogger
dsn, table, spool_dir, limit = sys.argv[1:5]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Python's default: a write past the limit is cut short
log = EventLogger(dsn, table=table, spool_dir=spool_dir, batch_size=1_000_000, flush_interval=3600)
log.file_started("short", "lid", "warm-up")
log.flush(30)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
log.file_error("short", "lid", "poison", "x" * 5000)  # a long dead-letter line: only part of it fits
for i in range(20):
    log.file_started("short", "lid", f"f{i}")
print(log.flush(30), log.stats()["dropped_dead_letter"], log.stats()["dead_lettered"])
"""


def test_a_short_write_never_leaves_half_a_dead_letter_line(mysql_dsn: str, mysql_table: str, tmp_path: Path) -> None:
    poisoned(mysql_dsn, mysql_table)
    spool_dir = str(tmp_path / "spool")
    dead = Path(EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir).spool_folder, "dead-letter.jsonl")
    dead.parent.mkdir(parents=True, mode=0o700)
    dead.write_text(json.dumps({"reason": "earlier", "row": None}) + "\n")
    limit = dead.stat().st_size + 1000
    done = subprocess.run([sys.executable, "-c", SHORT_WRITE, mysql_dsn, mysql_table, spool_dir, str(limit)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "1", "0"]
    assert [json.loads(line)["reason"] for line in dead.read_text().splitlines()] == ["earlier"]
    assert landed(mysql_dsn, mysql_table) == (21, 21, 21)
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY  # the test process unaffected


def test_the_dead_letter_file_counts_towards_the_spool_cap(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool"), max_bytes=8192)
    entry = {"reason": "refused", "row": ["00" * 16, "cap", None, "error", "poison", "x" * 1000]}
    answers = [spool.dead_letter(entry) for _ in range(10)]
    kept = [a for a in answers if a is None]
    assert 3 <= len(kept) < 8 and all("spool full" in str(a) for a in answers if a is not None)
    assert spool.measure() <= 8192


def test_the_spool_command_on_a_real_leftover_spool(mysql_dsn: str, mysql_table: str, tmp_path: Path) -> None:
    poisoned(mysql_dsn, mysql_table)
    spool_dir = str(tmp_path / "spool")
    wrong = mysql_dsn.replace("root@", "root:hunter2@")
    gone = EventLogger(wrong, table=mysql_table, spool_dir=spool_dir)  # the database refuses it: all left
    for i in range(500):
        gone.file_started("left", "lid", "poison" if i in (7, 8) else f"f{i}")
    gone.close()

    status = cli("spool", "status", "--spool-dir", spool_dir)
    assert status.returncode == 0, status.stderr
    assert "500 events not yet in the database" in status.stdout and mysql_table in status.stdout
    assert "hunter2" not in status.stdout and "127.0.0.1:3306/test" in status.stdout
    (folder,) = json.loads(cli("spool", "status", "--spool-dir", spool_dir, "--json").stdout)
    assert folder["events"] == 500 and folder["oldest"]

    replay = cli("spool", "replay", "--dsn", mysql_dsn, "--table", mysql_table, "--spool-dir", spool_dir)
    assert replay.returncode == 0, replay.stderr
    assert "498 written, 2 dead-lettered, 0 left" in replay.stdout
    assert landed(mysql_dsn, mysql_table) == (498, 498, 498)

    listed = cli("spool", "dead-letters", "--folder", folder["path"])
    assert "2 dead letters" in listed.stdout and listed.stdout.count("4025") == 2
    with Database(mysql_dsn) as db:
        db.execute(f"ALTER TABLE {db.name(mysql_table)} DROP CONSTRAINT no_poison")  # the cause, fixed
    retry = cli("spool", "dead-letters", "--retry", "--folder", folder["path"], "--dsn", mysql_dsn)
    assert retry.returncode == 0, retry.stderr
    assert "2 written, 0 dead-lettered, 0 left" in retry.stdout
    assert landed(mysql_dsn, mysql_table) == (500, 500, 499)
    assert json.loads(cli("spool", "status", "--spool-dir", spool_dir, "--json").stdout)[0]["dead_letters"] == 0


def test_the_spool_command_prints_stored_text_escaped(mysql_dsn: str, mysql_table: str, tmp_path: Path) -> None:
    """A refused row whose text holds an escape sequence and an OSC 52 clipboard write reaches the terminal as
    visible escapes, never as the sequences themselves."""
    poisoned(mysql_dsn, mysql_table)
    spool_dir = str(tmp_path / "spool")
    log = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir)
    log.file_error("b\x1b[2J", "\x1b]52;c;aGk=\x07", "poison", "refused\r")
    assert log.flush(30)  # the row is dead-lettered (refused by the CHECK), not dropped
    log.close()
    listed = cli("spool", "dead-letters", "--folder", log.spool_folder)
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout and "\r" not in listed.stdout
    assert "b\\x1b[2J \\x1b]52;c;aGk=\\x07 error poison" in listed.stdout


KILLED_AFTER_A_WRITE = r"""
import os, signal, sys
from cofi_eventlog import EventLogger
dsn, table, spool_dir = sys.argv[1:4]
log = EventLogger(dsn, table=table, spool_dir=spool_dir, batch_size=1_000_000, flush_interval=3600)
log.file_started("pinned", "lid", "first")
assert log.flush(30)  # written: the journal now names the server its rows go to
for i in range(100):
    log.file_started("pinned", "lid", f"f{i}")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_journal_is_written_only_into_the_server_its_rows_went_to(
        mysql_dsn: str, mysql_table: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two independent servers, each with a database `test`: one spool folder serves both DSNs (it is named by
    the database, not the host). The journal a process left after writing to the private server is not
    written into the shared one, and is into the private one."""
    private = Server(scratch("cofi-pin-"), "pin")
    private.start()
    try:
        private.sql("CREATE DATABASE test")
        there = f"mysql://root@127.0.0.1:{private.port}/test"
        spool_dir = str(tmp_path / "spool")
        done = subprocess.run([sys.executable, "-c", KILLED_AFTER_A_WRITE, there, mysql_table, spool_dir],
                              capture_output=True, timeout=120)
        assert done.returncode == -9, done.stderr
        here = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir)
        assert here.spool_folder == EventLogger(there, table=mysql_table, spool_dir=spool_dir).spool_folder
        with caplog.at_level("WARNING", logger="cofi_eventlog"):
            here.file_started("here", "lid", "own")
            assert here.flush(30)
        here.close()
        assert landed(mysql_dsn, mysql_table) == (1, 1, 1)  # its own event only
        assert "not adopted" in " ".join(r.getMessage() for r in caplog.records)
        back = EventLogger(there, table=mysql_table, spool_dir=spool_dir)
        assert back.flush(30)
        adopted = back.stats()["adopted"]
        back.close()
        assert adopted == 100
        assert landed(there, mysql_table) == (101, 101, 101)
    finally:
        private.stop()
