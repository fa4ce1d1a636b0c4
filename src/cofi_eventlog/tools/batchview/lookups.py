"""Questions across batches, each answered through an index: the recent batches, the newest one, one
event, and the errors of a time range."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from .reader import Reader
from .times import iso, moment, stored


def recent_batches(reader: Reader, table: str, limit: int) -> list[tuple[str, datetime]]:
    """(batch, its last event), newest first.

    One index dive per batch: MySQL's loose index scan over (batchId, createdAt); SQLite has none, so the
    batches are walked one by one with a recursive query (MariaDB's optimizer cannot run that one well)."""
    t = reader.name(table)
    if reader.dialect == "mysql":
        sql = (f"SELECT batchId, MAX(createdAt) AS latest FROM {t} GROUP BY batchId "
               f"ORDER BY latest DESC LIMIT {int(limit)}")
    else:
        sql = (f"WITH RECURSIVE b(id) AS (SELECT MIN(batchId) FROM {t} UNION ALL "
               f"SELECT (SELECT MIN(batchId) FROM {t} WHERE batchId > b.id) FROM b WHERE b.id IS NOT NULL) "
               f"SELECT id, (SELECT MAX(createdAt) FROM {t} WHERE batchId = b.id) AS latest FROM b "
               f"WHERE id IS NOT NULL ORDER BY latest DESC LIMIT {int(limit)}")
    out = []
    for batch, latest in reader.fetchall(sql):
        when = moment(latest)
        if when is not None:
            out.append((str(batch), when))
    return out


def newest_batch(reader: Reader, table: str) -> str | None:
    """The batch of the newest event by time (eventIds of legacy writers need not follow time)."""
    found = reader.scalar(f"SELECT batchId FROM {reader.name(table)} ORDER BY createdAt DESC LIMIT 1")
    return None if found is None else str(found)


def event(reader: Reader, table: str, batch: str, event_id: str) -> dict[str, Any] | None:
    """One event of a batch, its metadata (payload, traceback) parsed; None when there is none."""
    try:
        key = bytes.fromhex(event_id)
    except ValueError:
        return None
    rows = reader.fetchall(f"SELECT eventId, batchId, stage, eventType, fileName, message, gpuIp, processed, total, "
                           f"metadata, createdAt FROM {reader.name(table)} WHERE eventId = %s AND batchId = %s",
                           (key, batch))
    if not rows:
        return None
    eid, batch_id, stage, etype, file, message, gpu, processed, total, metadata, created = rows[0]
    return {"event_id": bytes(eid).hex(), "batch": batch_id, "stage": stage, "type": etype, "file": file,
            "message": message, "gpu": gpu, "processed": processed, "total": total,
            "metadata": _parsed(metadata), "at": iso(moment(created))}


def _parsed(metadata: Any) -> Any:
    if metadata is None:
        return None
    text = metadata.decode("utf-8", "replace") if isinstance(metadata, (bytes, bytearray)) else str(metadata)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def errors_since(reader: Reader, table: str, since: datetime, *, count_up_to: int | None = None,
                 sample: int = 5000) -> dict[str, Any]:
    """Error events of every batch since a time: how many in all (exact, or up to ``count_up_to``), and per
    batch how many and when the last was among the newest ``sample`` of them.

    Both statements read the (createdAt, eventType) index over the time range asked for, and both are
    bounded: a flood of errors makes neither the answer nor the work grow past its limits. The rows are
    counted here, as a GROUP BY batchId would tempt a planner into scanning a batch index whole."""
    t = reader.name(table)
    where = f"FROM {t} WHERE createdAt >= %s AND eventType = 'error'"
    if count_up_to is None:
        total = int(reader.scalar(f"SELECT COUNT(*) {where}", (stored(since),)) or 0)
    else:
        total = int(reader.scalar(f"SELECT COUNT(*) FROM (SELECT 1 {where} LIMIT {int(count_up_to) + 1}) capped",
                                  (stored(since),)) or 0)
    per_batch: dict[str, list[Any]] = {}
    rows = reader.fetchall(f"SELECT batchId, createdAt {where} ORDER BY createdAt DESC LIMIT {int(sample)}",
                           (stored(since),))
    for batch, at in rows:
        when = moment(at)
        entry = per_batch.setdefault(str(batch), [0, when])
        entry[0] += 1
        entry[1] = max(entry[1], when) if when and entry[1] else when
    batches = [{"batch": b, "errors": n, "last": iso(last)}
               for b, (n, last) in sorted(per_batch.items(), key=lambda item: -item[1][0])]
    more = count_up_to is not None and total > count_up_to
    return {"since": iso(since), "errors": min(total, count_up_to) if more and count_up_to is not None else total,
            "errors_more": more, "sampled": len(rows), "batches": batches}
