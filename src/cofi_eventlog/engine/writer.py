"""The writer: one thread per logger that empties the queue into the sink.

Callers append tuples to ``queue`` (a deque: append and popleft are atomic) and set ``wake`` when a
batch is ready. The thread wakes on that or every ``flush_interval``, normalizes what it took,
and writes it. When the database fails transiently the rows go to the spool at once and the
database is tried again after an exponential, jittered backoff; when it answers, the spool is
replayed. Rows the database will never take are isolated by halving the batch and dead-lettered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..events import EventIds, Raw, normalize
from ..sinks.base import Row, Sink, SinkError
from .backoff import Backoff
from .batching import take
from .spool import Spool
from .stats import WriterStats

log = logging.getLogger("cofi_eventlog")


class FlushMarker:
    """Answered once every event queued before it has been handled; ``ok`` if all reached the database."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = True


class RotateMarker:
    """Follows the last event of a rotated journal segment through the queue."""

    def __init__(self, segment: Any) -> None:
        self.segment = segment


class Writer:
    def __init__(self, queue: deque[Any], sink: Sink, spool: Spool, ids: EventIds, *, batch_size: int,
                 flush_interval: float, journal: bool, warn: Callable[[str, str], None]) -> None:
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
        self._warn = warn
        self._backoff = Backoff()
        self._down_until = 0.0
        self._taken: list[Raw] = []
        self._stopping = False
        self._abandoned = False
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cofi-eventlog-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None) -> bool:
        """Drain and stop. Past the timeout, whatever is unwritten is spooled from this thread."""
        self._stopping = True
        self.wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                self._abandoned = True
                self._spill_leftovers()
                self.spool.close()
                return False
        self._cycle()  # whatever a caller appended while the thread was finishing
        self._finish()
        return True

    def _spill_leftovers(self) -> None:
        items = list(self._taken)
        while True:
            batch, _ = take(self.queue, 1 << 30)
            if not batch:
                break
            items.extend(batch)
        rows = self._rows(items)
        if rows:
            self._spill(rows)
            self._warn("close", f"database unreachable at close; {len(rows)} events spooled for replay")

    # -- the loop ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            self.wake.wait(self.flush_interval)
            self.wake.clear()
            self._cycle()
        self._cycle()

    def _cycle(self) -> None:
        """Write everything queued, then see to the spool. Never raises: the thread must not die."""
        try:
            while self.queue and not self._abandoned:
                items, markers = take(self.queue, self.batch_size)
                self._taken = items
                if items:
                    self._deliver(self._rows(items))
                self._taken = []
                for marker in markers:
                    self._answer(marker)
            if self.journal and self.spool.journal is not None and self.spool.journal.size >= (1 << 20):
                self.rotate_journal()
            if self.backlog and not self._abandoned and len(self.queue) < self.batch_size:
                self._replay()
        except Exception as exc:  # a bug here must cost a warning, not the thread
            self.stats.last_error = f"writer: {type(exc).__name__}: {exc}"
            log.exception("cofi_eventlog writer cycle failed")

    def _finish(self) -> None:
        if self.journal:
            self.rotate_journal()
            self._cycle()
        self.spool.close()
        self.sink.close()

    def _rows(self, items: Sequence[Any]) -> list[Row]:
        rows: list[Row] = []
        for item in items:
            if type(item[0]) is bytes:  # normalized on the caller's thread (strict or spool mode)
                rows.append(item)
                continue
            row, notes = normalize(item, self.ids)
            if notes:
                self.stats.coerced += 1
            rows.append(row)
        return rows

    def _answer(self, marker: Any) -> None:
        if isinstance(marker, RotateMarker):
            self.spool.retire(marker.segment)
            return
        if self.backlog and not self._is_down():
            self._replay()
        marker.ok = not self.backlog
        marker.done.set()

    # -- writing -------------------------------------------------------------------------------------
    def _is_down(self) -> bool:
        return time.monotonic() < self._down_until

    def _deliver(self, rows: list[Row]) -> None:
        """Write rows, or spool them if the database is (or just went) away."""
        if self._is_down():
            self._spill(rows)
            return
        try:
            self._write_isolating(rows)
        except SinkError as exc:
            self._went_down(exc)
            self._spill(rows)
            return
        self._backoff.reset()

    def _went_down(self, exc: SinkError) -> None:
        self.stats.retries += 1
        self.stats.last_error = str(exc)
        delay = self._backoff.next_delay()
        self._down_until = time.monotonic() + delay
        self._warn("down", f"database unavailable ({exc}); spooling, next try in {delay:.2f}s")

    def _write_isolating(self, rows: Sequence[Row]) -> None:
        """Write rows; a permanent error splits the batch until the rows at fault are dead-lettered.
        Transient errors propagate."""
        started = time.perf_counter()
        before = self.sink.statements
        try:
            self.sink.write(rows)
        except SinkError as exc:
            if exc.transient:
                raise
            if len(rows) == 1:
                self._dead_letter(rows[0], str(exc))
                return
            half = len(rows) // 2
            self._write_isolating(rows[:half])
            self._write_isolating(rows[half:])
            return
        except Exception as exc:  # a driver bug or an unexpected type: treat as permanent for these rows
            if len(rows) == 1:
                self._dead_letter(rows[0], f"{type(exc).__name__}: {exc}")
                return
            half = len(rows) // 2
            self._write_isolating(rows[:half])
            self._write_isolating(rows[half:])
            return
        self.stats.timed(time.perf_counter() - started)
        self.stats.flushes += self.sink.statements - before
        self.stats.written += len(rows)

    def _dead_letter(self, row: Row, reason: str) -> None:
        self.spool.dead_letter(row, reason)
        self.stats.dead_lettered += 1
        self.stats.last_error = reason
        self._warn("dead", f"event {row[0].hex()} rejected by the database and dead-lettered: {reason}")

    # -- the spool -----------------------------------------------------------------------------------
    def _spill(self, rows: Sequence[Row]) -> None:
        if self.spool.spill(rows):
            self.stats.spilled += len(rows)
            self.backlog = True
        else:
            self.stats.dropped += len(rows)
            self._warn("full", f"spool full ({self.spool.max_bytes} bytes); {len(rows)} events dropped")

    def rotate_journal(self) -> None:
        """Start a new journal segment; the old one is deleted once the events before the marker are
        written (or spilled), or kept for replay if some of its events never entered the queue."""
        with self.spool.lock:
            old = self.spool.swap_journal()
            if old is not None:
                self.queue.append(RotateMarker(old))

    def _replay(self) -> None:
        """Write every spool segment no live process holds; stop at the first transient failure."""
        self.backlog = False  # set again by any spill or overflow that happens meanwhile
        self.spool.close_spill()
        if not self.journal:
            with self.spool.lock:
                old = self.spool.swap_journal()
            if old is not None:
                self.spool.retire(old)
        for path, fd in self.spool.replayable():
            if self._stopping and self._abandoned:
                self.spool.release(fd)
                self.backlog = True
                return
            rows, torn = self.spool.read(fd)
            try:
                for start in range(0, len(rows), self.batch_size):
                    self._write_isolating(rows[start:start + self.batch_size])
            except SinkError as exc:
                self.spool.release(fd)
                self.backlog = True
                self._went_down(exc)
                return
            if torn:
                self.stats.spool_torn_bytes += torn
                self._warn("torn", f"{path.name}: {torn} bytes at the end were torn or corrupt")
            self.spool.finish(path, fd)
            self.stats.replayed += len(rows)
        self._backoff.reset()
