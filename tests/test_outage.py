"""Database outages through a real TCP proxy: a cut link, a hung server, rows the server refuses."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import landed
from faultproxy import FaultProxy

from cofi_eventlog import EventLogger
from cofi_eventlog.database import Database, create_table_sql

pytestmark = pytest.mark.mysql


def dead_letters(spool_dir: str) -> list[dict[str, Any]]:
    return [json.loads(line) for path in Path(spool_dir).glob("*/dead-letter.jsonl")
            for line in path.read_text().splitlines()]


@pytest.mark.parametrize("durability", ["journal", "spool"])
def test_link_cut_for_3s_mid_stream_loses_nothing_duplicates_nothing_blocks_no_caller(
        fault_proxy: FaultProxy, mysql_dsn: str, mysql_table: str, spool_dir: str, durability: str) -> None:
    log = EventLogger(fault_proxy.dsn, table=mysql_table, spool_dir=spool_dir, durability=durability,
                      batch_size=500, flush_interval=0.1)
    stop = threading.Event()
    made: dict[int, int] = {}
    longest: dict[int, float] = {}

    def produce(k: int) -> None:
        n, worst = 0, 0.0
        while not stop.is_set():
            for _ in range(4):
                started = time.perf_counter()
                log.file_started("cut", "lid", f"t{k}-{n}.wav", "10.0.0.1")
                worst = max(worst, time.perf_counter() - started)
                n += 1
            time.sleep(0.001)
        made[k], longest[k] = n, worst

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    fault_proxy.cut()
    time.sleep(3.0)
    fault_proxy.restore()
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join()
    assert log.flush(timeout=60)
    stats = log.stats()
    log.close()

    total = sum(made.values())
    assert landed(mysql_dsn, mysql_table) == (total, total, total)
    assert stats["dropped"] == 0
    assert stats["retries"] >= 1  # the cut did hit
    assert max(longest.values()) < 0.5, f"a caller was blocked {max(longest.values()):.3f}s"


@pytest.mark.parametrize("fault", ["cut", "hang"])
def test_close_with_database_unreachable_keeps_its_timeout_and_the_next_logger_writes_the_rest(
        fault_proxy: FaultProxy, mysql_dsn: str, mysql_table: str, spool_dir: str, fault: str) -> None:
    log = EventLogger(fault_proxy.dsn, table=mysql_table, spool_dir=spool_dir, flush_interval=0.1, timeout=5)
    for i in range(500):
        log.file_started("close", "lid", f"before-{i}")
    assert log.flush(timeout=10)
    getattr(fault_proxy, fault)()
    for i in range(1500):
        log.file_started("close", "lid", f"after-{i}")
    time.sleep(0.5)  # the writer is inside a database call that will not answer (hang), or backing off (cut)

    started = time.monotonic()
    log.close(timeout=2)
    elapsed = time.monotonic() - started
    stats = log.stats()
    assert elapsed < 4, f"close(timeout=2) took {elapsed:.2f}s"
    assert stats["unwritten"] == 1500 and stats["dropped"] == 0
    assert landed(mysql_dsn, mysql_table)[0] == 500

    fault_proxy.restore()
    nxt = EventLogger(fault_proxy.dsn, table=mysql_table, spool_dir=spool_dir)
    deadline = time.monotonic() + 30
    while nxt.stats()["adopted"] < 1500 and time.monotonic() < deadline:  # the journal is let go once the
        assert nxt.flush(timeout=30)  # abandoned writer's database call ends (hang: at its timeout)
    adopted = nxt.stats()["adopted"]
    nxt.close()
    assert adopted >= 1500
    assert landed(mysql_dsn, mysql_table) == (2000, 2000, 2000)


def test_a_batch_taken_ahead_stays_in_the_journal_when_close_gives_up(
        mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    """A busy writer takes its next batch while the server runs the last statement of the current one.
    Here that statement is slow (a trigger sleeps on its last row) and close() gives up waiting: the batch
    taken ahead stays in the journal with the rest, and the next logger writes it."""
    with Database(mysql_dsn) as db:
        db.create_events_table(mysql_table)
        db.execute(f"CREATE TRIGGER {db.name(mysql_table + '_slow')} BEFORE INSERT ON {db.name(mysql_table)} "
                   "FOR EACH ROW BEGIN IF LEFT(NEW.fileName, 5) = 'slow-' THEN "
                   "DO SLEEP(CAST(SUBSTRING(NEW.fileName, 6) AS UNSIGNED)); END IF; END")
    log = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir, batch_size=100, flush_interval=3600,
                      timeout=30)
    for i in range(100):  # one statement; the server holds it a second, while the next 500 are queued
        log.file_started("ahead", "lid", "slow-1" if i == 99 else f"f{i}")
    time.sleep(0.3)
    for i in range(100, 600):  # taken as 4 batches (their last row sleeps 3 s) and, ahead, one more
        log.file_started("ahead", "lid", "slow-3" if i == 499 else f"f{i}")
    time.sleep(1.5)
    log.close(timeout=0.5)
    assert log.stats()["unwritten"] == 500  # the 4 batches being written and the one taken ahead
    deadline = time.monotonic() + 30
    while landed(mysql_dsn, mysql_table)[0] < 500 and time.monotonic() < deadline:
        time.sleep(0.1)  # the abandoned writer's last statement ends
    nxt = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir)
    nxt.file_started("ahead", "lid", "f600")  # this process's abandoned journal is written through the late list
    assert nxt.flush(timeout=30)
    nxt.close()
    assert landed(mysql_dsn, mysql_table) == (601, 601, 601)


def test_flush_keeps_its_timeout_while_the_database_hangs(
        fault_proxy: FaultProxy, mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    log = EventLogger(fault_proxy.dsn, table=mysql_table, spool_dir=spool_dir, flush_interval=0.05, timeout=5)
    for i in range(100):
        log.file_started("flush", "lid", f"a{i}")
    assert log.flush(timeout=10)
    fault_proxy.hang()
    for i in range(100):
        log.file_started("flush", "lid", f"b{i}")
    started = time.monotonic()
    assert not log.flush(timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 3, f"flush(timeout=1) took {elapsed:.2f}s"
    fault_proxy.restore()
    assert log.flush(timeout=30)
    log.close()
    assert landed(mysql_dsn, mysql_table) == (200, 200, 200)


@pytest.mark.parametrize(("refusal", "errno"), [("check", "4025"), ("character set", "1366")])
def test_a_row_the_database_refuses_is_dead_lettered_and_the_rest_land(
        mysql_dsn: str, mysql_table: str, spool_dir: str, refusal: str, errno: str) -> None:
    """A row no retry will ever get in, inside a multi-row batch: the others land, it is kept aside."""
    with Database(mysql_dsn) as db:
        ddl = create_table_sql("mysql", mysql_table)
        if refusal == "character set":  # one the library does not translate for (it does latin1, utf8mb3)
            ddl = ddl.replace("`fileName` VARCHAR(1024)", "`fileName` VARCHAR(1024) CHARACTER SET greek")
        db.execute(ddl)
        if refusal == "check":
            db.execute(f"ALTER TABLE {db.name(mysql_table)} ADD CONSTRAINT no_poison "
                       "CHECK (LEFT(fileName, 6) <> 'poison')")

    def strict_session(conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES'")

    log = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir, create_table=False,
                      on_connect=strict_session, batch_size=100)
    poison = "poison-漢字.wav"
    for i in range(300):
        log.file_started("poison", "lid", poison if i == 137 else f"f{i}.wav")
    assert log.flush(timeout=10)
    stats = log.stats()
    log.close()

    assert landed(mysql_dsn, mysql_table) == (299, 299, 299)
    assert landed(mysql_dsn, mysql_table, "WHERE fileName LIKE %s", ("poison%",)) == (0, 0, 0)
    assert stats["dead_lettered"] == 1 and stats["dropped"] == 0
    (dead,) = dead_letters(spool_dir)
    assert dead["row"][4] == poison and dead["row"][3] == "file_start"
    assert f"mysql error {errno}" in dead["reason"]


def test_a_row_over_max_allowed_packet_is_dead_lettered_not_retried_forever(
        fault_proxy: FaultProxy, mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    """The server answers an oversize packet by dropping the connection (2006/2013, like an outage);
    the proxy does the same to one row's statement."""
    fault_proxy.max_packet = 32 * 1024
    log = EventLogger(fault_proxy.dsn, table=mysql_table, spool_dir=spool_dir, batch_size=50, flush_interval=0.05)
    for i in range(200):
        log.file_error("packet", "lid", f"f{i}.wav", "x" * 60_000 if i == 123 else "small")
    for attempt in range(20):  # other traffic keeps the database proven alive between attempts
        log.flush(timeout=10)
        if log.stats()["dead_lettered"]:
            break
        log.file_started("traffic", "lid", f"t{attempt}.wav")
    assert log.flush(timeout=10)
    stats = log.stats()
    log.close()

    assert stats["dead_lettered"] == 1
    assert landed(mysql_dsn, mysql_table, "WHERE batchId = 'packet'") == (199, 199, 199)
    (dead,) = dead_letters(spool_dir)
    assert dead["row"][4] == "f123.wav" and "max_allowed_packet" in dead["reason"]


def test_spool_cap_drops_are_counted_and_warned_at_a_limited_rate(
        fault_proxy: FaultProxy, mysql_dsn: str, mysql_table: str, spool_dir: str,
        caplog: pytest.LogCaptureFixture) -> None:
    fault_proxy.cut()
    log = EventLogger(fault_proxy.dsn, table=mysql_table, spool_dir=spool_dir, max_spool_bytes=256 * 1024,
                      batch_size=100, flush_interval=0.05)
    with caplog.at_level(logging.WARNING, logger="cofi_eventlog"):
        for i in range(10_000):
            log.file_started("cap", "lid", f"f{i}.wav")
        assert not log.flush(timeout=2)
    stats = log.stats()
    kept = stats["unwritten"]
    assert kept > 0 and stats["dropped_spool_full"] > 0
    assert kept + stats["dropped_spool_full"] == 10_000 and stats["dropped"] == stats["dropped_spool_full"]
    assert stats["spool_bytes"] <= 256 * 1024
    drop_warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert 1 <= len(drop_warnings) <= 2, [r.getMessage() for r in drop_warnings]

    fault_proxy.restore()
    log.flush(timeout=30)  # False: events were dropped since the last answer
    assert log.flush(timeout=30)
    log.close()
    assert landed(mysql_dsn, mysql_table) == (kept, kept, kept)


def test_own_warnings_never_come_back_in_as_events(
        fault_proxy: FaultProxy, mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    log = EventLogger(fault_proxy.dsn, table=mysql_table, spool_dir=spool_dir, flush_interval=0.05)

    class Forward(logging.Handler):
        """What a user might write: every warning becomes an event."""

        def emit(self, record: logging.LogRecord) -> None:
            log.file_error("echo", "logging", record.name, record.getMessage())

    handler = Forward()
    ours = logging.getLogger("cofi_eventlog")
    ours.addHandler(handler)
    try:
        log.file_started("real", "lid", "first.wav")
        assert log.flush(timeout=10)
        fault_proxy.cut()
        for i in range(200):
            log.file_started("real", "lid", f"f{i}.wav")
        assert not log.flush(timeout=5)
        fault_proxy.restore()
        assert log.flush(timeout=30)
    finally:
        ours.removeHandler(handler)
    stats = log.stats()
    log.close()
    assert stats["dropped_recursion"] >= 1  # the outage was warned about, and the echo refused
    assert landed(mysql_dsn, mysql_table, "WHERE batchId = 'echo'") == (0, 0, 0)
    assert landed(mysql_dsn, mysql_table, "WHERE batchId = 'real'") == (201, 201, 201)


def test_a_flush_without_timeout_is_answered_when_close_gives_up(
        fault_proxy: FaultProxy, mysql_table: str, spool_dir: str) -> None:
    log = EventLogger(fault_proxy.dsn, table=mysql_table, spool_dir=spool_dir, timeout=5)
    log.file_started("b", "lid", "f0")
    assert log.flush(timeout=10)
    fault_proxy.hang()
    log.file_started("b", "lid", "f1")
    answer: list[bool] = []
    flusher = threading.Thread(target=lambda: answer.append(log.flush()))  # no timeout
    flusher.start()
    time.sleep(0.5)
    assert answer == []  # it waits through the outage
    log.close(timeout=0.5)
    flusher.join(10)
    assert answer == [False]
    assert log.stats()["unwritten"] == 1
