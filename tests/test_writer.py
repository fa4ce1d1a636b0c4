"""The writer's decisions, driven on the test's thread with a sink that fails on demand: no database, no
sleeps. What is committed in the journal is exactly what the sink took; a failure rewinds and backs off;
a flush ticket is answered only once its events are in."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from cofi_eventlog.engine.diagnostics import Warner
from cofi_eventlog.engine.journal import DATA, Journal
from cofi_eventlog.engine.spool import Spool
from cofi_eventlog.engine.writer import Ticket, Writer
from cofi_eventlog.events import EventIds
from cofi_eventlog.sinks.base import Row, SinkError


class FakeSink:
    """Takes rows, or raises the errors queued in ``failures`` first."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.failures: list[SinkError] = []
        self.statements = 0
        self.coerced = 0
        self.closed = 0

    def write(self, rows: Sequence[Row], meanwhile: Callable[[], None] | None = None) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.statements += 1
        self.rows.extend(rows)
        if meanwhile is not None:
            meanwhile()

    def check(self) -> None:
        pass

    def cluster(self) -> str | None:
        return None

    def close(self) -> None:
        self.closed += 1

    def abandon(self) -> None:
        pass


def call(i: int) -> bytes:
    item = ["file_start", "b", "lid", f"f{i}.wav", None, None, None, None, None, None, time.time_ns(), i]
    return orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)


def writer_with(tmp_path: Path, events: int, *, batch_size: int = 10) -> tuple[Writer, FakeSink, Journal]:
    folder = tmp_path / "spool"
    folder.mkdir(mode=0o700)
    journal = Journal.create(folder, f"journal-{os.getpid()}-1-1", 5 << 32, 1 << 20)
    for i in range(events):
        journal.append(call(i))
    sink = FakeSink()
    writer = Writer(deque([journal]), sink, Spool(str(folder), max_bytes=1 << 30), EventIds(5 << 32),
                    batch_size=batch_size, flush_interval=3600, adopt_interval=3600, idle_timeout=3600,
                    appended=lambda: events, dropped=lambda: 0, borrowed=list, warn=Warner())
    return writer, sink, journal


def test_whole_batches_go_at_once_and_the_rest_lingers(tmp_path: Path) -> None:
    writer, sink, journal = writer_with(tmp_path, 25)
    writer._cycle(everything=False)
    assert len(sink.rows) == 20 and writer.committed == 20  # two whole batches; 5 wait for the linger
    assert journal.pending() == 5
    writer._cycle(everything=True)
    assert [r[4] for r in sink.rows] == [f"f{i}.wav" for i in range(25)] and journal.pending() == 0


def test_a_failure_keeps_everything_uncommitted_and_backs_off(tmp_path: Path) -> None:
    writer, sink, journal = writer_with(tmp_path, 30)
    sink.failures.append(SinkError("mysql error 2003: down", transient=True, code=2003))
    writer._cycle(everything=True)
    assert sink.rows == [] and writer.committed == 0 and journal.committed == DATA
    assert writer.stats.retries == 1 and writer._is_down() and "2003" in str(writer.stats.last_error)
    writer._cycle(everything=True)  # within the backoff: nothing is tried
    assert sink.rows == []
    writer._down_until = 0.0  # the backoff is over
    writer._cycle(everything=True)
    assert len(sink.rows) == 30 and writer.committed == 30 and writer.stats.last_error is None
    assert len({r[0] for r in sink.rows}) == 30


def test_ids_are_the_same_whoever_writes_the_journal(tmp_path: Path) -> None:
    writer, sink, journal = writer_with(tmp_path, 3)
    writer._cycle(everything=True)
    again = [r[0] for r in sink.rows]
    journal.rewind()
    journal.commit(DATA)
    journal.read = DATA
    other = FakeSink()
    adopter = Writer(deque(), other, writer.spool, EventIds(), batch_size=10, flush_interval=1, adopt_interval=1,
                     idle_timeout=1, appended=lambda: 0, dropped=lambda: 0, borrowed=list, warn=Warner())
    adopter.adopted.append((journal, EventIds(journal.node)))
    adopter._write(everything=True)
    assert [r[0] for r in other.rows] == again  # a row written twice lands once


def test_a_ticket_is_answered_once_its_events_are_in_and_no_sooner(tmp_path: Path) -> None:
    writer, sink, _ = writer_with(tmp_path, 12)
    ticket = Ticket(12)
    writer.tickets.append(ticket)
    sink.failures.append(SinkError("down", transient=True, code=2003))
    writer._cycle(everything=True)
    assert not ticket.done.is_set()  # scanned for orphans, but the events are not in
    writer._down_until = 0.0
    writer._cycle(everything=True)
    assert ticket.done.is_set() and ticket.ok


def test_close_answers_every_waiting_flush(tmp_path: Path) -> None:
    writer, sink, _ = writer_with(tmp_path, 5)
    sink.failures.extend(SinkError("down", transient=True, code=2003) for _ in range(100))
    writer.start()
    answers: list[bool] = []
    flusher = threading.Thread(target=lambda: answers.append(writer.flush(None)))
    flusher.start()
    let_go: list[bool] = []
    writer.stop(5, lambda: let_go.append(True))
    flusher.join(5)
    assert answers == [False] and let_go == [True] and sink.closed >= 1
