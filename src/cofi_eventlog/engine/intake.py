"""The callers' side of the queue, past the plain append: a full queue (spill, block or drop) and
spool durability (journal first, then the queue). Runs on the caller's thread; the writer thread
never calls in here."""

from __future__ import annotations

import time
from typing import Any

from ..events import normalize
from ..sinks.base import Row
from .diagnostics import Warner
from .spool import encode
from .stats import AtomicCounter
from .writer import Writer

# the counters stats() reports from here, summed with the writer's where it keeps the same kind
COUNTS = ("spilled", "coerced", "not_journaled", "dropped_queue_full", "dropped_spool_full")


class Intake:
    def __init__(self, writer: Writer, *, max_queue: int, batch_size: int, on_full: str, block_timeout: float,
                 warn: Warner) -> None:
        self.writer = writer
        self.queue = writer.queue
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.on_full = on_full
        self.block_timeout = block_timeout
        self._warn = warn
        self.spilled = AtomicCounter()
        self.coerced = AtomicCounter()  # calls coerced on the caller's thread (strict and spool modes)
        self.not_journaled = AtomicCounter()
        self.dropped_queue_full = AtomicCounter()
        self.dropped_spool_full = AtomicCounter()

    def put(self, item: Any) -> None:
        """Append, or overflow when full; wake the writer once a batch is waiting."""
        if len(self.queue) >= self.max_queue:
            return self.overflow(item)
        self.queue.append(item)
        self._wake_if_batch()

    def _wake_if_batch(self) -> None:
        wake = self.writer.wake
        if len(self.queue) >= self.batch_size and not wake.is_set():
            wake.set()

    def journal(self, item: Any, row: Row, *, coerced: bool) -> None:
        """Spool mode: the event is in the journal (written, not synced) before the call returns.
        With the queue full it stays only there, and replay delivers it. If the journal cannot take it,
        the call itself is queued, so that the writer treats it as an event of memory mode."""
        if len(self.queue) >= self.max_queue and self.on_full == "block":
            self._wait_for_room()
        record = encode([row])
        spool = self.writer.spool
        with spool.lock:
            room = len(self.queue) < self.max_queue
            problem = spool.journal_append(record, queued=room)
            if room:
                self.queue.append(row if problem is None else item)
        if problem is None:
            if coerced:
                self.coerced.add()
            if not room:
                self.spilled.add()
                self.writer.backlog = True
        elif room:
            self.not_journaled.add()
            self._warn("journal", f"{problem}; event kept in memory only")
        else:
            self.dropped_spool_full.add()
            self._warn("full", f"queue full ({self.max_queue}) and {problem}; event dropped")
        self._wake_if_batch()

    def overflow(self, item: Any) -> None:
        """The queue is full: spill to the journal (default), wait a bounded time, or drop."""
        if self.on_full == "block" and self._wait_for_room():
            self.queue.append(item)
            return
        if self.on_full == "drop":
            self.dropped_queue_full.add()
            self._warn("drop", f"queue full ({self.max_queue}); events dropped (on_full='drop')")
            return
        self.spill(item, f"queue full ({self.max_queue})")

    def spill(self, item: Any, why: str) -> None:
        """Put one event in the spool's journal, for replay: a full queue, or a call after close()."""
        if type(item[0]) is bytes:
            row = item
        else:
            row, notes = normalize(item, self.writer.ids)
            if notes:
                self.coerced.add()
        spool = self.writer.spool
        with spool.lock:
            problem = spool.journal_append(encode([row]), queued=False)
        if problem is None:
            self.spilled.add()
            self.writer.backlog = True
            self._warn("spill", f"{why}; events spilled to {spool.folder}")
        else:
            self.dropped_spool_full.add()
            self._warn("full", f"{why} and {problem}; event dropped")

    def _wait_for_room(self) -> bool:
        """on_full='block': wait up to block_timeout for the writer to make room."""
        deadline = time.monotonic() + self.block_timeout
        self.writer.hurry()
        while len(self.queue) >= self.max_queue and time.monotonic() < deadline:
            time.sleep(0.001)
        return len(self.queue) < self.max_queue

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name).value for name in COUNTS}
