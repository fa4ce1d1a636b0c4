"""The writer: one thread per logger that empties the queue into the sink.

Callers append tuples to ``queue`` (a deque: append and popleft are atomic) and set ``wake`` when a
batch is ready or a flush is asked for. Otherwise the thread writes once the oldest queued event has
waited ``flush_interval`` (a linger, as Kafka's producer has), so a steady burst goes out in full
batches rather than in a partial one at every tick. When the database fails transiently the rows
go to the spool at once and the database is tried again after an exponential, jittered backoff;
while it is down, batches go straight to the spool. When it answers, the spool is replayed. Rows
the database will never take are isolated and dead-lettered (see isolate.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..events import EventIds
from ..rows import build_rows
from ..sinks.base import Row, Sink, SinkError
from .backoff import Backoff
from .batching import take
from .diagnostics import Warner
from .isolate import Isolator
from .sigterm import library_thread
from .spool import Segment, Spool
from .stats import WriterStats

PIPELINED = 4  # batches a busy writer hands the sink at once


class FlushMarker:
    """Answered once every event queued before it has been handled; ``ok`` if all reached the database
    (or the dead-letter file) and nothing was dropped since the previous marker was answered."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = True
        self.requeued = False


class RotateMarker:
    """Follows the last event of a rotated journal segment through the queue."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment


class Writer:
    def __init__(self, queue: deque[Any], sink: Sink, spool: Spool, ids: EventIds, *, batch_size: int,
                 flush_interval: float, journal: bool, warn: Warner, dropped: Callable[[], int]) -> None:
        self.queue = queue
        self.wake = threading.Event()
        self.sink = sink
        self.spool = spool
        self.ids = ids
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.journal = journal
        self.stats = WriterStats()
        self.backlog = True  # the spool may hold rows (ours or an earlier process's) not yet replayed
        self._hurried = False
        self._warn = warn
        self._isolator = Isolator(sink, self.stats, self._dead_letter)
        self._backoff = Backoff()
        self._down_until = 0.0
        self._held: list[list[Any]] = []  # the events taken and not yet handled: this batch, the next
        self._next: tuple[list[Any], Sequence[Row] | None, list[Any]] | None = None  # taken ahead
        self._failed_segments: set[str] = set()
        self._journal_unsent = False  # journaled rows not written since the last rotation marker
        self._dropped = dropped  # every drop so far, the callers' included
        self._dropped_seen = 0
        self._stopping = False
        self._abandoned = False
        self._thread: threading.Thread | None = None
        if spool.problem:
            warn("spool", spool.problem)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cofi-eventlog-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None) -> bool:
        """Drain and stop. Past the timeout the writer is left to finish its database call in the
        background, and whatever is unwritten is spooled from this thread. False in that case.

        Called again — by a second close(), or by a SIGTERM handler that interrupted the first — it
        waits for the same drain, up to its own timeout."""
        if self._abandoned:
            self.spool_stragglers()
            return False
        self._stopping = True
        self.wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                self._abandoned = True
                self._spill_leftovers([item for items in self._held for item in items])
                self.spool.close()
                return False
        self.spool_stragglers()
        return True

    def spool_stragglers(self) -> None:
        """Spool what callers racing with close() appended after the writer's last look."""
        if self.queue:
            self._spill_leftovers([])
        self.spool.close()

    def _spill_leftovers(self, in_flight: Sequence[Any]) -> None:
        """Spool the writer's in-flight events and the rest of the queue, from the closing thread.
        Normalizing a call again gives the same eventId, so rows the writer still lands stay single."""
        items = list(in_flight)
        rotated: list[Segment] = []
        while self.queue:
            for marker in take(self.queue, 1 << 30, items):
                if isinstance(marker, RotateMarker):
                    rotated.append(marker.segment)
                else:
                    marker.ok = False
                    marker.done.set()
        rows = self._rows(items)
        if self.journal:
            rows = self._unjournaled(items, rows)
        if rows:
            self._spill(rows)
            self._warn("close", f"{len(rows)} events not written by the close deadline (or logged during "
                                f"close) were spooled for replay")
        for segment in rotated:  # its events may not all be spooled yet: keep it for replay
            segment.dirty = True
            self.spool.retire(segment)

    # -- the loop ------------------------------------------------------------------------------------
    def _run(self) -> None:
        library_thread()
        while not self._stopping:
            self.wake.wait(self._linger())
            self.wake.clear()
            if self._due():
                self._cycle()
        self._down_until = 0.0  # one last attempt at the database, whatever the backoff says
        self._cycle()
        if self.journal:
            self.rotate_journal()
            self._cycle()
        self.sink.close()
        if self._abandoned:
            self.spool.close()

    def hurry(self) -> None:
        """Write what is queued now, without waiting for a full batch or the linger (flush, a full queue)."""
        self._hurried = True
        self.wake.set()

    def _linger(self) -> float:
        """Seconds until the oldest queued event has waited flush_interval."""
        try:
            oldest = self.queue[0]
        except IndexError:
            return self.flush_interval
        if type(oldest) is not tuple:
            return 0.0  # a marker: someone is waiting on it
        called_ns: int = oldest[10] * 1000 if type(oldest[0]) is bytes else oldest[10]  # row µs, call ns
        waited = (time.time_ns() - called_ns) / 1e9
        return min(self.flush_interval, max(0.0, self.flush_interval - waited))

    def _due(self) -> bool:
        """Whether this wake-up has work: a full batch, a flush or marker, an old enough event, the spool."""
        if self._stopping or self._hurried or len(self.queue) >= self.batch_size:
            self._hurried = False
            return True
        if self.queue and self._linger() == 0.0:
            return True
        if self.journal and self.spool.journal_due():
            return True
        return self.backlog and not self._is_down()

    def _cycle(self) -> None:
        """Write everything queued, then see to the spool. Never raises: the thread must not die, and
        every marker taken is answered."""
        try:
            while (self.queue or self._next) and not self._abandoned:
                items, rows, markers = self._next or self._take()
                self._next = None
                try:
                    if items:
                        self._deliver(items, rows, ahead=not markers)
                except Exception:  # a bug here must cost a warning and a count, not the thread
                    self._bug(len(items))
                self._held = self._held[1:]
                for marker in markers:
                    self._answer(marker)
            if self.journal and self.spool.journal_due():
                self.rotate_journal()
            if self.backlog and not self._abandoned and not self._is_down():
                self._replay()
        except Exception:
            self._bug(0)

    def _take(self) -> tuple[list[Any], None, list[Any]]:
        """Events (their rows not built yet) and the markers that follow them."""
        items: list[Any] = []
        self._held.append(items)  # filled as popped: a closer at a deadline sees them all
        return items, None, take(self.queue, self._take_size(), items)

    def _take_ahead(self) -> None:
        """While the server runs a batch's last statement, take the next batch and build its rows, so the
        server does not wait for them: a busy writer keeps one statement or another running."""
        if self._next is not None or len(self.queue) < self.batch_size or self._abandoned:
            return
        items, _, markers = self._take()
        try:
            rows: Sequence[Row] | None = self._rows(items)
        except Exception:  # built again, and counted, where a bug is handled
            rows = None
        self._next = (items, rows, markers)

    def _take_size(self) -> int:
        """Whole batches, up to PIPELINED of them when that many wait: the sink sends them as statements of
        batch_size rows, building each while the server runs the one before."""
        return min(PIPELINED, max(1, len(self.queue) // self.batch_size)) * self.batch_size

    def _bug(self, lost: int) -> None:
        self.stats.dropped_writer_error += lost
        self.stats.last_error = "writer: internal error (see the warning's traceback)"
        self._warn.exception("bug", f"cofi_eventlog writer cycle failed; {lost} events dropped")

    def _rows(self, items: Sequence[Any]) -> Sequence[Row]:
        rows, coerced = build_rows(items, self.ids)
        self.stats.coerced += coerced
        return rows

    def _answer(self, marker: Any) -> None:
        if isinstance(marker, RotateMarker):
            if self._journal_unsent:  # some of its events reached neither the database nor a spill
                marker.segment.dirty = True
                self._journal_unsent = False
            self.spool.retire(marker.segment)
            if marker.segment.dirty:
                self.backlog = True
            return
        if self._journal_unsent and not marker.requeued:
            # journaled events before this marker wait in a segment whose rotation marker is still queued:
            # let it be retired (and so become replayable) first
            marker.requeued = True
            self.queue.append(marker)
            return
        try:
            if self.backlog:
                self._replay()  # an explicit flush tries the database now, whatever the backoff says
        finally:
            dropped = self._dropped()
            marker.ok = not self.backlog and dropped == self._dropped_seen
            self._dropped_seen = dropped
            marker.done.set()

    # -- writing -------------------------------------------------------------------------------------
    def _is_down(self) -> bool:
        return time.monotonic() < self._down_until

    def _deliver(self, items: list[Any], rows: Sequence[Row] | None = None, *, ahead: bool = False) -> None:
        """Write the events (``rows``: built already), or keep them on disk if the database is (or just went)
        away. ``ahead``: the next batch may be taken while the server runs this one's last statement."""
        rows = self._rows(items) if rows is None else rows
        if not self._is_down():
            try:
                self._isolator.write(rows, self._take_ahead if ahead else None)
            except SinkError as exc:
                self._went_down(exc)
            else:
                self._up()
                return
        if self.journal:
            kept = len(rows)
            rows = self._unjournaled(items, rows)
            if len(rows) < kept:  # the journal segment holding the others is kept for replay
                self.stats.spilled += kept - len(rows)
                self._journal_unsent = True
                self.backlog = True
                self.rotate_journal()
        if rows:
            self._spill(rows)

    def _unjournaled(self, items: Sequence[Any], rows: Sequence[Row]) -> list[Row]:
        """Spool mode: the rows callers made are in the journal already, and a journal segment that
        holds undelivered rows is kept for replay; only the others (journal unwritable) need spilling."""
        journaled = {item[0] for item in items if type(item[0]) is bytes}
        return [row for row in rows if row[0] not in journaled]

    def _up(self) -> None:
        if self._down_until:
            self.stats.last_error = None  # recovered
        self._backoff.reset()
        self._down_until = 0.0

    def _went_down(self, exc: SinkError) -> None:
        self.stats.retries += 1
        self.stats.last_error = str(exc)
        delay = self._backoff.next_delay()
        self._down_until = time.monotonic() + delay
        self._warn("down", f"database unavailable ({exc}); spooling, next try in {delay:.2f}s")

    def _dead_letter(self, row: Row, reason: str) -> None:
        """Keep a row the database refused; if even that fails, the row alone is dropped and counted."""
        event_id = row[0].hex()
        problem = self.spool.dead_letter({"reason": reason, "row": [event_id, *row[1:]]})
        self.stats.last_error = reason
        if problem is None:
            self.stats.dead_lettered += 1
            self._warn("dead", f"event {event_id} rejected by the database, written to "
                               f"{self.spool.dead_letter_path}: {reason}")
        else:
            self.stats.dropped_dead_letter += 1
            self._warn("dead-lost", f"event {event_id} rejected by the database ({reason}) and dropped: {problem}")

    # -- the spool -----------------------------------------------------------------------------------
    def _spill(self, rows: Sequence[Row]) -> None:
        problem = self.spool.spill(rows)
        if problem is None:
            self.stats.spilled += len(rows)
            self.backlog = True
        else:
            self.stats.dropped_spool_full += len(rows)
            self._warn("full", f"{problem}; {len(rows)} events dropped")

    def rotate_journal(self) -> None:
        """Start a new journal segment; the old one is deleted once the events before the marker are
        written (or spilled), or kept for replay if some of its events never entered the queue."""
        with self.spool.lock:
            old = self.spool.swap_journal()
            if old is not None:
                self.queue.append(RotateMarker(old))

    def replay_now(self) -> bool:
        """Replay the spool from the calling thread, for a writer that was never started (the ``spool
        replay`` command). True when nothing is left to replay."""
        self._replay()
        self.sink.close()
        return not self.backlog

    def _replay(self) -> None:
        """Write every spool segment no live process holds; stop at the first failure."""
        self.backlog = self._journal_unsent  # and set again by any spill or overflow meanwhile
        self.spool.close_spill()
        if not self.journal:  # in memory mode the journal only holds queue-full overflow
            with self.spool.lock:
                old = self.spool.swap_journal()
            if old is not None:
                self.spool.retire(old)
        elif self.spool.journal_due():
            self.rotate_journal()
            self.backlog = True
        self.spool.measure()
        for path, fd in self.spool.replayable(self._failed_segments):
            if self._abandoned:
                self.spool.release(fd)
                self.backlog = True
                return
            if not self._replay_segment(path, fd):
                return
        self._failed_segments.clear()

    def _replay_segment(self, path: Path, fd: int) -> bool:
        try:
            rows, torn = self.spool.read(fd)
        except OSError as exc:
            self.spool.release(fd)
            self._failed_segments.add(path.name)
            self._warn("torn", f"{path.name} unreadable: {exc}")
            return True
        try:
            for start in range(0, len(rows), self.batch_size):
                if self._abandoned:
                    self.spool.release(fd)
                    self.backlog = True
                    return False
                self._isolator.write(rows[start:start + self.batch_size])
        except SinkError as exc:
            self.spool.release(fd)
            self.backlog = True
            self._failed_segments.add(path.name)  # tried last next time, so it cannot hold back the rest
            self._went_down(exc)
            return False
        if torn and not rows:  # no intact record at all: not a segment this library wrote
            self.spool.quarantine(path, fd)
            self._warn("torn", f"{path.name}: no intact record in {torn} bytes; set aside as {path.name}.bad")
            return True
        if torn:
            self.stats.spool_torn_bytes += torn
            self._warn("torn", f"{path.name}: {torn} bytes at the end were torn or corrupt")
        self.spool.finish(path, fd)
        self.stats.replayed += len(rows)
        self._failed_segments.discard(path.name)
        self._up()
        return True
