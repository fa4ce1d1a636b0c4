"""Writing a batch so that one row the database will never take cannot hold back the others.

A permanent error (a failed CHECK, a value the column refuses) splits the batch in halves down to
the row at fault, which is dead-lettered with the reason.

A lost connection (2006, 2013, or an error the driver did not classify) is usually an outage, but
it is also how MariaDB answers a statement over ``max_allowed_packet``, and retrying that forever
would hold back every event behind it in the journal. So a batch that lost its connection quickly (a
hung server is an outage; an oversize packet is refused at once) is split too: when both halves fail
it is the database, and the error goes up as an outage; when one half passes, the other is searched.
A single row that loses the connection on three attempts, with other rows written between them, is
dead-lettered.

A Galera node refuses a statement whose write set is over ``wsrep_max_ws_size`` (1105) or
``wsrep_max_ws_rows`` (1180). Both halves may be over too, so such a batch is halved until the parts
fit; a single row refused so is treated like one that loses the connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..sinks.base import Row, Sink, SinkError
from ..sinks.mysql_connect import WRITE_SET_ERRNOS as WRITE_SET  # a Galera statement too large to replicate
from .stats import WriterStats

AMBIGUOUS = frozenset({None, 0, 2006, 2013})  # the connection died mid-statement: outage or the rows' fault
STRIKES = 3
SLOW = 2.0  # seconds: a statement that failed after this long met a hung server, not a bad row


class Isolator:
    def __init__(self, sink: Sink, stats: WriterStats, dead_letter: Callable[[Row, str], None]) -> None:
        self.sink = sink
        self.stats = stats
        self._dead_letter = dead_letter
        self.writes_ok = 0  # successful sink writes; "the database took something since..."
        self._strikes: dict[bytes, tuple[int, int]] = {}  # eventId -> (strikes, writes_ok at the last)

    def write(self, rows: Sequence[Row], meanwhile: Callable[[], None] | None = None) -> None:
        """Write rows, dead-lettering those at fault. Raises SinkError (transient) while the database
        is away; the caller keeps the rows and tries again later. ``meanwhile``: see Sink.write."""
        error = self._try(rows, meanwhile)
        if error is not None:
            self._isolate(rows, error)

    def _try(self, rows: Sequence[Row], meanwhile: Callable[[], None] | None = None) -> SinkError | None:
        """None when written; the error when it may be the rows' fault. Raises plain outages."""
        started = time.perf_counter()
        before, coerced = self.sink.statements, self.sink.coerced
        aside = [0.0]  # seconds spent in ``meanwhile``: the writer's own work, not the database's

        def timed_meanwhile() -> None:
            began = time.perf_counter()
            assert meanwhile is not None
            meanwhile()
            aside[0] += time.perf_counter() - began

        try:
            self.sink.write(rows, None if meanwhile is None else timed_meanwhile)
        except SinkError as exc:
            if exc.code in WRITE_SET:
                return exc
            if exc.transient and (exc.code not in AMBIGUOUS or time.perf_counter() - started > SLOW):
                raise
            return exc
        except Exception as exc:  # a driver failure on these rows, or a bug: not yet a reason to drop them
            return SinkError(f"{type(exc).__name__}: {exc}", transient=True)
        self.stats.timed(time.perf_counter() - started - aside[0])
        self.stats.flushes += self.sink.statements - before
        self.stats.coerced += self.sink.coerced - coerced
        self.stats.written += len(rows)
        self.writes_ok += 1
        if self._strikes:
            for row in rows:
                self._strikes.pop(row[0], None)
        return None

    def _isolate(self, rows: Sequence[Row], error: SinkError) -> None:
        if error.code in WRITE_SET and len(rows) > 1:
            half = len(rows) // 2
            for part in (rows[:half], rows[half:]):
                part_error = self._try(part)
                if part_error is not None:
                    self._isolate(part, part_error)
            return
        if error.transient and len(rows) == 1:
            self._strike(rows[0], error)
            return
        if len(rows) == 1:
            self._dead_letter(rows[0], str(error))
            return
        half = len(rows) // 2
        parts = (rows[:half], rows[half:])
        errors = [self._try(part) for part in parts]
        if error.transient and all(e is not None and e.transient for e in errors):
            raise error  # neither half went through: the database, not the rows
        for part, part_error in zip(parts, errors, strict=True):
            if part_error is not None:
                self._isolate(part, part_error)

    def _strike(self, row: Row, error: SinkError) -> None:
        count, mark = self._strikes.get(row[0], (0, -1))
        if count == 0 or mark != self.writes_ok:
            count += 1
        if count < STRIKES:
            if len(self._strikes) > 10_000:
                self._strikes.clear()
            self._strikes[row[0]] = (count, self.writes_ok)
            raise error
        self._strikes.pop(row[0], None)
        self._dead_letter(row, f"{error}; lost the connection on {STRIKES} attempts while other rows were "
                               "written (over max_allowed_packet, or a row the driver cannot send)")
