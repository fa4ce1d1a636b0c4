"""Copy every legacy row into the events table and check, row by row, that its event is there with the
same content: one pass in id order, a chunk at a time.

Each chunk looks up the eventIds its rows map to, writes the ones not stored yet (skipping any that a
concurrent run stored meanwhile), reads them back, and compares every stored event with its legacy row.
So a re-run writes only what is missing, a value the server changed on the way in is caught, and batch ids
are compared exactly, whatever the legacy table's collation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from ...database import Database
from ...sinks import COLUMNS
from ..progress import Progress
from .checks import Outcome
from .mapping import RowMapper, created_text
from .source import LegacyTable, rows_by_id

_LOOKUP = 500  # eventIds per IN list


def column_limits(db: Database, table: str) -> dict[str, tuple[int, int]]:
    """Text column → (characters, bytes) it holds. A server outside strict mode would truncate an overlong
    value with only a warning, so values are bounded to these before they are sent."""
    if db.dialect != "mysql":
        return {}
    rows = db.fetchall("SELECT column_name, character_maximum_length, character_octet_length "
                       "FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = %s "
                       "AND character_maximum_length IS NOT NULL", (table,))
    return {name: (int(chars), int(octets)) for name, chars, octets in rows}


def stored_events(db: Database, target: str, ids: Sequence[bytes]) -> dict[bytes, tuple[Any, ...]]:
    """eventId → the stored row (COLUMNS order) for those of ``ids`` the table holds."""
    select = ", ".join(db.name(c) for c in COLUMNS)
    found: dict[bytes, tuple[Any, ...]] = {}
    for start in range(0, len(ids), _LOOKUP):
        part = ids[start:start + _LOOKUP]
        marks = ", ".join(["%s"] * len(part))
        for row in db.fetchall(f"SELECT {select} FROM {db.name(target)} WHERE eventId IN ({marks})", part):
            found[bytes(row[0])] = row
    return found


def differences(expected: Sequence[Any], stored: Sequence[Any]) -> list[str]:
    """The columns where a stored event differs from the row its legacy row maps to."""
    out = []
    for column, want, have in zip(COLUMNS, expected, stored, strict=True):
        if isinstance(have, datetime):
            have = created_text(have)
        elif isinstance(have, (bytes, bytearray)) and column != "eventId":
            have = bytes(have).decode("utf-8", "replace")
        if want == have:
            continue
        if column == "metadata" and want is not None and have is not None and _same_json(want, have):
            continue  # MySQL 8 stores JSON in its own spelling
        out.append(column)
    return out


def _same_json(a: str, b: str) -> bool:
    try:
        return bool(orjson.loads(a) == orjson.loads(b))
    except orjson.JSONDecodeError:
        return False


def _insert(db: Database, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """One transaction per chunk on SQLite; on MySQL each multi-row statement commits on its own."""
    if db.dialect != "sqlite":
        db.executemany(sql, rows)
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(sql, rows)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def copy_and_check(db: Database, legacy: LegacyTable, target: str, mapper: RowMapper, *, chunk: int,
                   write: bool, target_exists: bool = True, progress: Progress | None = None) -> Outcome:
    """One pass over the legacy table. With ``write`` false (a dry run) nothing is written, and events
    not stored yet are counted as to be written."""
    sql = db.insert_events_sql(target)
    outcome = Outcome()
    for page in rows_by_id(db, legacy.name, legacy.columns, chunk):
        rows = [dict(zip(legacy.columns, r, strict=True)) for r in page]
        mapped = [mapper.map(r) for r in rows]
        ids = [m.row[0] for m in mapped if m.row is not None]
        stored = stored_events(db, target, ids) if target_exists else {}
        new = [m.row for m in mapped if m.row is not None and m.row[0] not in stored]
        if write and new:
            _insert(db, sql, new)
            stored.update(stored_events(db, target, [r[0] for r in new]))
        fresh = {r[0] for r in new}
        for legacy_row, result in zip(rows, mapped, strict=True):
            if result.row is None:
                outcome.not_carried(legacy_row.get("batch_id"), result.legacy_id, result.problem or "")
                continue
            event = stored.get(result.row[0])
            if event is None:
                outcome.absent(result.batch or "", result.legacy_id, to_write=not write)
                continue
            columns = differences(result.row, event)
            if columns:
                outcome.differs(result.batch or "", result.legacy_id, result.row[0], columns)
            else:
                outcome.carried(result.batch or "", result.row[0] in fresh, result.row[3] == "error")
        if progress is not None:
            progress.advance(len(page))
    if progress is not None:
        progress.finish()
    return outcome
