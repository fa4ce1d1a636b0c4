"""Copy every legacy row into the events table, a chunk at a time, exactly once across re-runs
(the eventId is derived from the legacy id, and duplicates are ignored by the primary key)."""

from __future__ import annotations

from ...database import Database
from ..progress import Progress
from .mapping import RowMapper
from .source import LegacyTable, rows_by_id


def column_limits(db: Database, table: str) -> dict[str, tuple[int, int]]:
    """Text column → (characters, bytes) it holds. A server outside strict mode would truncate an overlong
    value with only a warning, so values are checked against these before they are sent."""
    if db.dialect != "mysql":
        return {}
    rows = db.fetchall("SELECT column_name, character_maximum_length, character_octet_length "
                       "FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = %s "
                       "AND character_maximum_length IS NOT NULL", (table,))
    return {name: (int(chars), int(octets)) for name, chars, octets in rows}


def backfill(db: Database, legacy: LegacyTable, target: str, mapper: RowMapper, *, chunk: int,
             progress: Progress) -> int:
    """Returns how many rows were new. Each chunk is one transaction on SQLite; on MySQL each multi-row
    statement commits on its own, and a re-run after an interruption skips what landed."""
    sql = db.insert_events_sql(target)
    inserted = 0
    for page in rows_by_id(db, legacy.name, legacy.columns, chunk):
        rows = [mapper.map(dict(zip(legacy.columns, r, strict=True))) for r in page]
        if db.dialect == "sqlite":
            db.execute("BEGIN IMMEDIATE")
            try:
                inserted += db.executemany(sql, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        else:
            inserted += db.executemany(sql, rows)
        progress.advance(len(page))
    progress.finish()
    return inserted
