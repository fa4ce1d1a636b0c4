"""The SQL behind a batch's figures: a few statements whose cost does not grow with the table.

1. The batch's first and last event (two index look-ups) fix a window, so every later statement reads
   the same events however many arrive meanwhile.
2. The newest error events (at most MAX_ERRORS), for grouping and examples, and to name the files
   whose attempts are followed in step 3.
3. One pass over the batch's events counts them per stage, event type, GPU and time slot, and per file
   for the files that had an error (a failed file and one retried since look alike in counts).
   On MySQL, where eventId is the primary key, the pass walks it: eventIds begin with their time, so a
   batch's events lie in one key range, read in order without a look-up per row (about twice as fast as
   the batch index).
   The same statement counts the batch's events through the batch index; rows whose id does not follow
   their time (written by other code, such as the legacy rows of ``simulate``) make the two differ, and
   the pass is done again over the batch index.
4. The newest event's id: a batch whose newest event was migrated from processing_logs is history.
5. The stages its newest ``batch_start`` declared (``metadata.stages``), one index look-up.
6. Per GPU, its newest attempts and whether anything followed them (inflight.py): what it has in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ...events import MIGRATED_MARK
from .inflight import Attempt, in_flight
from .reader import Reader
from .times import micros, moment, stored

MAX_ERRORS = 5000  # error events read for grouping; the count of all of them is exact
MAX_TRAILS = 1000  # files with errors whose attempts are followed
MAX_SLOTS = 60  # time slots in the chart
SLOT_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


@dataclass(frozen=True)
class Group:
    """Events of one stage, type, GPU and time slot (the slot only for completions and errors), and of
    one file when that file had an error."""

    stage: str | None
    event_type: str
    gpu: str | None
    slot: int | None  # seconds since 1970 at the slot's start
    file: str | None
    events: int
    first: datetime
    last: datetime
    last_id: bytes  # orders events of the same microsecond
    total: int | None
    nameless: int  # events without a fileName


@dataclass(frozen=True)
class ErrorEvent:
    event_id: bytes
    stage: str | None
    file: str | None
    gpu: str | None
    at: datetime
    message: str
    error_type: str | None


@dataclass
class BatchData:
    """What the database said about a batch within its window; figures.py turns it into figures."""

    batch: str
    first: datetime
    last: datetime
    slot_seconds: int
    events: int = 0
    groups: list[Group] = field(default_factory=list)
    errors: list[ErrorEvent] = field(default_factory=list)
    migrated: bool = False
    declared: list[str] | None = None  # the stages batch_start declared, in order
    attempts: list[Attempt] = field(default_factory=list)  # per GPU, its newest attempts without an outcome

    @property
    def fingerprint(self) -> tuple[int, datetime]:
        return self.events, self.last


def fingerprint(reader: Reader, table: str, batch: str) -> tuple[int, datetime | None]:
    """(events, last event): what changes when anything is added to a batch."""
    count, last = reader.fetchall(f"SELECT COUNT(*), MAX(createdAt) FROM {reader.name(table)} WHERE batchId = %s",
                                  (batch,))[0]
    return int(count), moment(last)


def collect(reader: Reader, table: str, batch: str) -> BatchData | None:
    """The batch's data, or None when it has no events."""
    t = reader.name(table)
    first, last = (moment(v) for v in reader.fetchall(
        f"SELECT (SELECT MIN(createdAt) FROM {t} WHERE batchId = %s), "
        f"(SELECT MAX(createdAt) FROM {t} WHERE batchId = %s)", (batch, batch))[0])
    if first is None or last is None:
        return None
    span = (last - first).total_seconds()
    data = BatchData(batch, first, last, next((s for s in SLOT_SECONDS if span / s < MAX_SLOTS), SLOT_SECONDS[-1]))
    window = [stored(first), stored(last)]
    data.errors = _errors(reader, t, batch, window)
    data.groups = _groups(reader, t, table, data, window)
    data.events = sum(g.events for g in data.groups)
    newest = reader.scalar(f"SELECT eventId FROM {t} WHERE batchId = %s ORDER BY createdAt DESC LIMIT 1", (batch,))
    data.migrated = newest is not None and bytes(newest)[8:10] == MIGRATED_MARK
    data.declared = _declared(reader, t, batch)
    data.attempts = in_flight(reader, t, batch, window, data.groups)
    return data


def _declared(reader: Reader, t: str, batch: str) -> list[str] | None:
    """The stages of the newest batch_start that declared any (a list of names in its metadata)."""
    rows = reader.fetchall(f"SELECT metadata FROM {t} WHERE batchId = %s AND eventType = 'batch_start' "
                           "ORDER BY createdAt DESC LIMIT 20", (batch,))
    for (metadata,) in rows:
        if metadata is None:
            continue
        text = metadata.decode("utf-8", "replace") if isinstance(metadata, (bytes, bytearray)) else str(metadata)
        try:
            stages = orjson.loads(text).get("stages")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(stages, list) and stages and all(isinstance(n, str) and n for n in stages):
            return list(dict.fromkeys(stages))
    return None


def _errors(reader: Reader, t: str, batch: str, window: list[str]) -> list[ErrorEvent]:
    rows = reader.fetchall(
        f"SELECT eventId, stage, fileName, gpuIp, createdAt, SUBSTR(message, 1, 2000), "
        f"{reader.json_text('metadata', 'error_type')} FROM {t} WHERE batchId = %s AND eventType = 'error' "
        f"AND createdAt BETWEEN %s AND %s ORDER BY createdAt DESC LIMIT {MAX_ERRORS}", (batch, *window))
    out = []
    for event_id, stage, file, gpu, at, message, error_type in rows:
        when = moment(at)
        assert when is not None
        out.append(ErrorEvent(bytes(event_id), stage, file, gpu, when, "" if message is None else str(message),
                              None if error_type is None else str(error_type)))
    return out


def _groups(reader: Reader, t: str, table: str, data: BatchData, window: list[str]) -> list[Group]:
    """The one pass; on MySQL through the key range when that holds every event of the window (one
    statement counts both, so they see the same rows)."""
    names = list(dict.fromkeys(e.file for e in data.errors if e.file is not None))[:MAX_TRAILS]
    key_sql, key_params, key_of = reader.file_key(names)
    name_of = {key_of(n): n for n in names}
    slot_start = reader.slot_start("createdAt", data.slot_seconds)
    slot = f"CASE WHEN eventType IN ('file_complete', 'error') THEN {slot_start} END"
    select = (f"SELECT stage, eventType, gpuIp, {slot} AS slot, {key_sql} AS file, COUNT(*), MIN(createdAt), "
              f"MAX(createdAt), MAX(eventId), MAX(total), SUM(CASE WHEN fileName IS NULL THEN 1 ELSE 0 END)")
    group_by = "GROUP BY stage, eventType, gpuIp, slot, file"

    def groups(rows: list[tuple[Any, ...]]) -> list[Group]:
        return [_group(row, name_of) for row in rows]

    batch_hint, key_hint = reader.index_hints(table)
    if key_hint is not None:
        low = (micros(data.first) * 1000 << 64).to_bytes(16, "big")
        high = ((micros(data.last) + 1) * 1000 << 64).to_bytes(16, "big")
        rows = reader.fetchall(
            f"({select} FROM {t} {key_hint} WHERE eventId >= %s AND eventId < %s AND batchId = %s "
            f"AND createdAt BETWEEN %s AND %s {group_by} ORDER BY NULL) UNION ALL (SELECT 'count', NULL, NULL, "
            f"NULL, NULL, COUNT(*), NULL, NULL, NULL, NULL, NULL FROM {t} WHERE batchId = %s AND createdAt BETWEEN %s "
            f"AND %s)",
            [*key_params, low, high, data.batch, *window, data.batch, *window])
        counted = sum(int(r[5]) for r in rows if r[1] is None)  # the count's row: eventType is never NULL
        found = groups([r for r in rows if r[1] is not None])
        if sum(g.events for g in found) == counted:
            return found
    rows = reader.fetchall(f"{select} FROM {t} {batch_hint} WHERE batchId = %s "
                           f"AND createdAt BETWEEN %s AND %s {group_by}", [*key_params, data.batch, *window])
    return groups(rows)


def _group(row: tuple[Any, ...], name_of: dict[str, str]) -> Group:
    stage, etype, gpu, slot, key, events, first, last, last_id, total, nameless = row
    first_at, last_at = moment(first), moment(last)
    assert first_at is not None and last_at is not None
    return Group(stage, str(etype), gpu, None if slot is None else int(slot),
                 None if key is None else name_of.get(str(key)), int(events), first_at, last_at, bytes(last_id),
                 None if total is None else int(total), int(nameless or 0))
