"""The figures of one batch and of the recent ones, with each batch's data kept between requests for as
long as its event count and last event stay the same (a finished batch is read once)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Any

from .collect import BatchData, collect, fingerprint
from .figures import figures
from .lookups import errors_since, recent_batches
from .reader import Reader
from .times import iso

SUMMARY = ("batch", "state", "migrated", "files", "files_from", "progress_pct", "progress_of", "events", "errors",
           "first_event", "last_event", "quiet_seconds")
RECENT_ERRORS = timedelta(minutes=15)
RECENT_ERRORS_COUNTED = 100_000  # the list page counts recent errors up to this, then says "more than"
RECENT_ERRORS_SAMPLED = 2_000  # and attributes the newest this many to their batches


class BatchViews:
    def __init__(self, table: str, *, quiet_after: float = 60.0, ended_after: float | None = None,
                 keep: int = 256) -> None:
        self.table = table
        self.quiet_after = quiet_after
        self.ended_after = ended_after
        self._keep = keep
        self._data: OrderedDict[str, BatchData] = OrderedDict()
        self._lock = threading.Lock()

    def batch(self, reader: Reader, batch: str, *, now: datetime | None = None) -> dict[str, Any] | None:
        """The batch's figures, or None when it has no events."""
        data = self._current(reader, batch)
        if data is None:
            return None
        return figures(data, self.table, now=now, quiet_after=self.quiet_after, ended_after=self.ended_after)

    def batches(self, reader: Reader, *, limit: int = 20, now: datetime | None = None) -> dict[str, Any]:
        """The most recent batches (by last event) in summary, and the errors of the last minutes."""
        now = now or datetime.now(timezone.utc)
        rows = []
        for batch, _ in recent_batches(reader, self.table, limit):
            shown = self.batch(reader, batch, now=now)
            if shown is not None:
                stages = shown["stages"]
                rows.append({**{k: shown[k] for k in SUMMARY},
                             "in_flight": sum(s["in_flight"] for s in stages),
                             "waiting": sum(s["waiting"] for s in stages),
                             "stages": [s["stage"] for s in stages]})
        recent = errors_since(reader, self.table, now - RECENT_ERRORS, count_up_to=RECENT_ERRORS_COUNTED,
                              sample=RECENT_ERRORS_SAMPLED)
        return {"table": self.table, "now": iso(now), "limit": limit, "batches": rows, "recent_errors": recent}

    def _current(self, reader: Reader, batch: str) -> BatchData | None:
        with self._lock:
            kept = self._data.get(batch)
        if kept is not None and fingerprint(reader, self.table, batch) == kept.fingerprint:
            with self._lock:
                self._data.move_to_end(batch)
            return kept
        data = collect(reader, self.table, batch)
        if data is not None:
            with self._lock:
                self._data[batch] = data
                self._data.move_to_end(batch)
                while len(self._data) > self._keep:
                    self._data.popitem(last=False)
        return data
