"""A batch's failed files, to export or retry: each file and stage whose latest attempt ended in an error
(a file whose retry completed, or is running, is not failed).

Two statements over the batch's index range: its newest MAX_FAILED errors, then the latest start or
completion of every file since the oldest of them; ordered as figures.py orders steps (time, then eventId).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from .reader import Reader
from .shapes import split_type
from .times import iso, moment, stored

MAX_FAILED = 100_000
COLUMNS = ("file", "stage", "gpu", "time_utc", "error_type", "message")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def failed_files(reader: Reader, table: str, batch: str) -> dict[str, Any]:
    """{"batch", "files": [{file, stage, gpu, time_utc, error_type, message}, …] oldest first, "truncated"}."""
    t = reader.name(table)
    rows = reader.fetchall(
        f"SELECT eventId, stage, fileName, gpuIp, createdAt, SUBSTR(message, 1, 2000), "
        f"{reader.json_text('metadata', 'error_type')} FROM {t} WHERE batchId = %s AND eventType = 'error' "
        f"AND fileName IS NOT NULL ORDER BY createdAt DESC LIMIT {MAX_FAILED}", (batch,))
    latest: dict[tuple[Any, str], tuple[Any, ...]] = {}
    for row in rows:  # newest first: the first error of a file and stage is its latest
        latest.setdefault((row[1], str(row[2])), row)
    if not latest:
        return {"batch": batch, "files": [], "truncated": False}
    oldest = min(_at(r[4]) for r in latest.values())
    after: dict[tuple[Any, str], tuple[Any, bytes]] = {}
    for stage, file, at, eid in reader.fetchall(
            f"SELECT stage, fileName, MAX(createdAt), MAX(eventId) FROM {t} WHERE batchId = %s "
            f"AND eventType IN ('file_start', 'file_complete') AND createdAt >= %s AND fileName IS NOT NULL "
            f"GROUP BY stage, fileName", (batch, stored(oldest))):
        after[(stage, str(file))] = (_at(at), bytes(eid))
    files = []
    for key, (eid, stage, file, gpu, at, message, error_type) in latest.items():
        mark = (_at(at), bytes(eid))
        if after.get(key, mark) > mark:
            continue  # started again, or completed, since
        text = "" if message is None else str(message)
        files.append({"file": str(file), "stage": stage, "gpu": gpu, "time_utc": iso(mark[0]),
                      "error_type": split_type(text, None if error_type is None else str(error_type))[0],
                      "message": text})
    files.sort(key=lambda f: (f["time_utc"] or "", f["file"]))
    return {"batch": batch, "files": files, "truncated": len(rows) >= MAX_FAILED}


def as_csv(found: dict[str, Any]) -> str:
    """CSV with a header row; a cell that a spreadsheet would run as a formula gets a leading quote."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for f in found["files"]:
        writer.writerow([_cell(f[c]) for c in COLUMNS])
    return out.getvalue()


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def _at(value: Any) -> Any:
    when = moment(value)
    assert when is not None
    return when
