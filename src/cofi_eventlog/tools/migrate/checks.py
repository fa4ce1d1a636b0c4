"""Verification after the backfill: per batch, as many migrated events as legacy rows, alongside the
results of the migration plan's two verification queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...database import Database
from .mapping import MARKER

SEED_QUERY_ERRORS = "SELECT COUNT(*) FROM {events} WHERE eventType = 'error' AND batchId = <batch>"
SEED_QUERY_LEGACY = "SELECT COUNT(*) FROM {legacy} WHERE batch_id = '<batch>'"


@dataclass(frozen=True)
class BatchCheck:
    batch: str
    legacy_rows: int  # the second seed query
    migrated: int
    error_events: int  # the first seed query

    @property
    def ok(self) -> bool:
        return self.legacy_rows == self.migrated


def _grouped(db: Database, sql: str, params: tuple[Any, ...] = ()) -> dict[str, int]:
    return {str(batch): int(count) for batch, count in db.fetchall(sql, params)}


def migrated_count(db: Database, target: str) -> int:
    return int(db.scalar(f"SELECT COUNT(*) FROM {db.name(target)} WHERE SUBSTR(eventId, 9, 4) = %s", (MARKER,)))


def check_batches(db: Database, legacy: str, target: str) -> list[BatchCheck]:
    batch_id, batch = db.name("batch_id"), db.name("batchId")
    legacy_counts = _grouped(db, f"SELECT {batch_id}, COUNT(*) FROM {db.name(legacy)} GROUP BY {batch_id}")
    migrated = _grouped(db, f"SELECT {batch}, COUNT(*) FROM {db.name(target)} WHERE SUBSTR(eventId, 9, 4) = %s "
                            f"GROUP BY {batch}", (MARKER,))
    errors = _grouped(db, f"SELECT {batch}, COUNT(*) FROM {db.name(target)} WHERE eventType = 'error' "
                          f"GROUP BY {batch}")
    batches = sorted(set(legacy_counts) | set(migrated))
    return [BatchCheck(b, legacy_counts.get(b, 0), migrated.get(b, 0), errors.get(b, 0)) for b in batches]


def render(checks: list[BatchCheck], legacy: str, target: str, *, limit: int = 20) -> list[str]:
    """The table a person reads; every mismatch is shown, matching batches up to ``limit``."""
    shown = [c for c in checks if not c.ok] + [c for c in checks if c.ok][:limit]
    heads = ("batch", f"query 2: {legacy} rows", f"migrated to {target}", "query 1: error events")
    width = max([len(heads[0])] + [len(c.batch) for c in shown])
    lines = [
        "verification, per batch:",
        f"  query 1: {SEED_QUERY_ERRORS.format(events=target)}",
        f"  query 2: {SEED_QUERY_LEGACY.format(legacy=legacy)}",
        f"  {heads[0]:<{width}}  {heads[1]}  {heads[2]}  {heads[3]}",
    ]
    for check in shown:
        lines.append(f"  {check.batch:<{width}}  {check.legacy_rows:>{len(heads[1])}}  "
                     f"{check.migrated:>{len(heads[2])}}  {check.error_events:>{len(heads[3])}}  "
                     f"{'ok' if check.ok else 'MISMATCH'}")
    hidden = len(checks) - len(shown)
    if hidden:
        lines.append(f"  … {hidden} more batches, all matching")
    return lines
