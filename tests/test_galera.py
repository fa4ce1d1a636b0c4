"""Against a real 3-node MariaDB Galera cluster on loopback (tests/servers.py): a node SIGKILLed mid-stream,
writers on different nodes, write-set limits, and each of Galera's own errors.

The cluster starts once (about 12 s), on a thread from the moment the tests are collected (conftest.py), so
that it comes up while other tests run; it is stopped at the end of this module. The kill comes last:
the tests before it need every node, and ``heal`` brings back one that an earlier test took away.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import GALERA, Galera, Server, galera_cluster, require, scratch
from test_sinks import _row

from cofi_eventlog import EventLogger
from cofi_eventlog.database import Database
from cofi_eventlog.sinks import MySQLSink, SinkError, parse_dsn

WRITER = """
import json, sys
from cofi_eventlog import EventLogger
from cofi_eventlog.database import Database
dsn, table, tag, spool, count = sys.argv[1:6]
log = EventLogger(dsn, table=table, spool_dir=spool, batch_size=250, create_table=False)
for i in range(int(count)):
    log.file_completed("four", "lid", f"{tag}-{i}.wav", "10.0.0.1")
flushed = log.flush(60)
stats = log.stats()
log.close()
print(json.dumps({"flushed": flushed, **stats}))
"""


@pytest.fixture(scope="module")
def galera() -> Iterator[Galera]:
    require(GALERA, "rsync", "socat")
    started = time.monotonic()
    cluster = galera_cluster()
    print(f"\n3-node Galera cluster: waited {time.monotonic() - started:.1f} s for it")
    yield cluster
    cluster.stop()


@pytest.fixture
def table(galera: Galera) -> Iterator[str]:
    """A fresh table, made once through node 1 as init-db makes it, dropped afterwards."""
    galera.heal()
    name = f"g_{time.monotonic_ns() % 10**12}"
    with Database(galera.dsn(galera.nodes[0])) as db:
        db.create_events_table(name)
    yield name
    next(n for n in galera.nodes if n.alive()).sql(f"DROP TABLE IF EXISTS test.{name}")


def counts(node: Server, table: str) -> tuple[int, int, int]:
    """(rows, distinct eventIds, distinct fileNames) as this node has them, once it has applied every write
    set the cluster ordered before the question (wsrep_sync_wait)."""
    row = node.sql("SET SESSION wsrep_sync_wait = 1",
                   f"SELECT COUNT(*), COUNT(DISTINCT eventId), COUNT(DISTINCT fileName) FROM test.{table}")[0]
    return int(row[0]), int(row[1]), int(row[2])


def created_tables(*nodes: Server) -> int:
    return sum(int(n.status("Com_create_table")) for n in nodes)


def test_four_processes_through_two_nodes_write_every_row_once(galera: Galera, table: str, tmp_path: Path) -> None:
    one, two, _ = galera.nodes
    before = created_tables(one, two)
    orders = [(one, two), (one, two), (two, one), (two, one)]  # two processes prefer each node
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, galera.dsn(*order), table, f"p{i}",
                               str(tmp_path / "spool"), "2500"], stdout=subprocess.PIPE, text=True)
             for i, order in enumerate(orders)]
    results = [json.loads(p.communicate(timeout=180)[0]) for p in procs]
    print(f"\nfour processes, two nodes: {[r['written'] for r in results]} written; node1 {counts(one, table)}, "
          f"node2 {counts(two, table)} (rows, distinct eventIds, distinct files)")
    assert all(r["flushed"] and r["written"] == 2500 and r["dropped"] == 0 and r["dead_lettered"] == 0
               for r in results), results
    assert counts(one, table) == counts(two, table) == (10_000, 10_000, 10_000)
    assert created_tables(one, two) == before  # no DDL on connect: the table was there


def log_across_a_change(node: Server, change: str, undo: str, dsn: str, table: str, spool: Path, batch: str,
                        count: int) -> dict[str, Any]:
    """A logger connects and writes one event; then ``SET GLOBAL {change}`` on the node; then ``count``
    events in one batch, flushed. The change is undone whatever happens. Returns the logger's stats."""
    log = EventLogger(dsn, table=table, spool_dir=str(spool), batch_size=1000)
    try:
        log.batch_started(batch, total_files=count)
        assert log.flush(10)  # connected, and sized its statements before the change
        node.sql(f"SET GLOBAL {change}")
        for i in range(count):
            log.file_completed(batch, "lid", f"{batch}-{i}.wav", "10.0.0.1")
        assert log.flush(30)
        return log.stats()
    finally:
        node.sql(f"SET GLOBAL {undo}")
        log.close()


def test_a_statement_over_the_write_set_row_limit_is_split_and_lands(galera: Galera, table: str,
                                                                     tmp_path: Path) -> None:
    node = galera.nodes[1]
    stats = log_across_a_change(node, "wsrep_max_ws_rows = 100", "wsrep_max_ws_rows = 0", galera.dsn(node), table,
                                tmp_path, "ws-rows", 1000)
    print(f"\nwsrep_max_ws_rows=100 set after connect: 1,000 events in one batch -> written {stats['written'] - 1} "
          f"in {stats['flushes'] - 1} statements, retries {stats['retries']}, dead-lettered {stats['dead_lettered']}")
    assert stats["written"] == 1001 and stats["dead_lettered"] == 0 and stats["retries"] == 0
    assert stats["flushes"] >= 11  # no statement of more than 100 rows got through
    assert counts(galera.nodes[2], table) == (1001, 1001, 1000)  # the batch event has no file

    fresh = MySQLSink(parse_dsn(galera.dsn(node)), table)  # a new connection reads the limit and fits it
    node.sql("SET GLOBAL wsrep_max_ws_rows = 100")
    try:
        rows = [_row(i, f"fresh-{i}") for i in range(1000)]
        assert len(fresh.statements_for(rows)) == 10
        fresh.write(rows)
    finally:
        node.sql("SET GLOBAL wsrep_max_ws_rows = 0")
        fresh.close()
    assert counts(node, table)[0] == 2001


def test_a_statement_over_the_write_set_size_is_split_and_lands(galera: Galera, table: str,
                                                                tmp_path: Path) -> None:
    node = galera.nodes[1]  # 64 KiB: a 1000-row statement is about 200 KiB
    stats = log_across_a_change(node, "wsrep_max_ws_size = 65536", "wsrep_max_ws_size = 2147483647",
                                galera.dsn(node), table, tmp_path, "ws-size", 1000)
    print(f"\nwsrep_max_ws_size=64 KiB set after connect: 1,000 events in one batch -> written {stats['written'] - 1} "
          f"in {stats['flushes'] - 1} statements, retries {stats['retries']}, dead-lettered {stats['dead_lettered']}")
    assert stats["written"] == 1001 and stats["dead_lettered"] == 0 and stats["retries"] == 0
    assert stats["flushes"] > 4  # no statement of about 200 KiB got through
    assert counts(galera.nodes[0], table) == (1001, 1001, 1000)


def test_a_certification_conflict_is_transient_and_the_retry_is_harmless(galera: Galera, table: str) -> None:
    """1213: a write set from another node wins over this statement, which rolls back. Made to happen:
    the statement holds row X and waits for row Y, locked by a transaction left open on its node, while
    node 1 commits X; with wsrep_retry_autocommit=0 the server does not retry it on its own."""
    one, two, _ = galera.nodes
    x, y = _row(1, "conflict-x"), _row(2, "conflict-y")
    two.sql("SET GLOBAL wsrep_retry_autocommit = 0")
    holder = two.connect(database="test", autocommit=False)
    sink = MySQLSink(parse_dsn(galera.dsn(two, one)), table)
    try:
        sink.write([_row(3, "connect")])
        with holder.cursor() as cur:
            cur.execute(f"INSERT INTO {table} (eventId, batchId, eventType, createdAt) VALUES (%s, 'b', 'error', "
                        "'2024-01-01')", (y[0],))
        failure: list[SinkError] = []
        writing = threading.Thread(target=lambda: _catch(lambda: sink.write([x, y]), failure))
        writing.start()
        time.sleep(0.5)  # the statement now holds X and waits for Y
        MySQLSink(parse_dsn(galera.dsn(one)), table).write([x])
        writing.join(30)
        assert not writing.is_alive()
        assert [(e.code, e.transient) for e in failure] == [(1213, True)]
        assert sink.host == two.address  # a conflict is no reason to leave the node
    finally:
        holder.rollback()
        holder.close()
        two.sql("SET GLOBAL wsrep_retry_autocommit = 1")
    sink.write([x, y])  # the same rows again: X is skipped, Y lands
    sink.close()
    assert counts(one, table) == (3, 3, 3)


def _catch(action: object, into: list[SinkError]) -> None:
    try:
        action()  # type: ignore[operator]
    except SinkError as exc:
        into.append(exc)


def test_a_node_that_takes_no_queries_is_left_for_the_next(galera: Galera, table: str, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """1047: a node out of the primary component, or one an operator drains with wsrep_reject_queries,
    answers but refuses every statement on a table."""
    one, two, _ = galera.nodes
    with caplog.at_level("WARNING", logger="cofi_eventlog"):
        stats = log_across_a_change(one, "wsrep_reject_queries = ALL", "wsrep_reject_queries = NONE",
                                    galera.dsn(one, two), table, tmp_path, "drained", 100)
    assert stats["written"] == 101 and stats["dead_lettered"] == 0 and stats["retries"] >= 1
    assert stats["last_error"] is None  # cleared once the next node took the rows
    assert any("mysql error 1047" in r.getMessage() for r in caplog.records)
    assert counts(two, table) == (101, 101, 100)


def test_failover_stays_in_the_cluster(galera: Galera, table: str) -> None:
    """A DSN listing node 1, an independent server, then node 2: when node 1 refuses queries, the sink passes
    the independent server over (another cluster state UUID) and writes to node 2."""
    one, two, _ = galera.nodes
    lone = Server(scratch("cofi-lone-"), "lone")
    lone.start()
    try:
        lone.sql("CREATE DATABASE test")
        sink = MySQLSink(parse_dsn(f"mysql://root@{one.address},{lone.address},{two.address}/test"), table)
        rows = [_row(i, f"cluster-{i}") for i in range(30)]
        sink.write(rows[:10])
        assert sink.host == one.address
        one.sql("SET GLOBAL wsrep_reject_queries = ALL")
        try:
            with pytest.raises(SinkError, match="1047"):  # the connection in use: refused by its node
                sink.write(rows[10:20])
            sink.write(rows[10:20])
            assert sink.host == two.address
        finally:
            one.sql("SET GLOBAL wsrep_reject_queries = NONE")
        alone = MySQLSink(parse_dsn(f"mysql://root@{lone.address},{one.address}/test"), table)
        alone.write([_row(40, "lone-first")])  # a sink that first wrote to the lone server ...
        assert alone.host == lone.address
        lone.stop()
        with pytest.raises(SinkError, match="2013"):  # the connection in use dies with its server ...
            alone.write(rows[20:])
        with pytest.raises(SinkError) as info:  # ... and the sink does not follow the DSN into the cluster
            alone.write(rows[20:])
        assert "no host could take the rows" in str(info.value)
        assert f"host {one.address} is not in the cluster written to so far (galera cluster " in str(info.value)
        sink.write(rows[20:])
        sink.close()
    finally:
        lone.stop()
    assert counts(one, table) == (30, 30, 30)


def test_failover_with_node_1_killed_mid_stream(galera: Galera, table: str, tmp_path: Path) -> None:
    """20,000 events through a DSN listing the three nodes, at about 25,000 a second so that the writer is
    busy with node 1 when it is SIGKILLed, after 8,000."""
    one, two, three = galera.nodes
    log = EventLogger(galera.dsn(), table=table, spool_dir=str(tmp_path), batch_size=500, flush_interval=0.05)
    started = time.monotonic()
    try:
        for i in range(20_000):
            log.file_completed("failover", "lid", f"k{i}.wav", "10.0.0.1")
            if i % 500 == 499:
                time.sleep(0.02)
            if i == 7_999:
                written_before = log.stats()["written"]
                one.kill()
        flushed = log.flush(120)
        stats = log.stats()
    finally:
        log.close()
    seconds = time.monotonic() - started
    found = {node.name: counts(node, table) for node in (two, three)}
    print(f"\nfailover: {written_before} written before the kill; flush()={flushed} after {seconds:.1f} s; "
          f"{found}; statements {stats['flushes']}, unwritten {stats['unwritten']}, "
          f"retries {stats['retries']}, last error {stats['last_error']}")
    assert flushed is True and stats["dropped"] == 0 and stats["dead_lettered"] == 0
    assert found == {"node2": (20_000, 20_000, 20_000), "node3": (20_000, 20_000, 20_000)}
