"""The backup: a full copy of the legacy table, and the rollback path once that table is dropped.

A backup is usable when it holds every row of the legacy table, unchanged (compared row by row, in id
order). It may hold more: rows deleted from the legacy table since it was made. One that lacks a row or
holds a changed one is never overwritten or topped up; the message says which rows and what to do.
The legacy table is dropped only under a lock, after the same comparison passed again.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ...database import Database
from ..progress import Progress
from .mapping import MigrationError
from .source import row_count, rows_by_id

_SHOWN = 5  # ids quoted per kind of difference


def backup_name(source: str) -> str:
    return f"{source}_backup"


def check_names(source: str, target: str, backup: str) -> None:
    """Three different tables. MySQL may fold the case of table names and SQLite always does, so names
    equal but for case are the same table."""
    named = {"--source-table": source, "--table": target, "--backup-table": backup}
    seen: dict[str, str] = {}
    for option, name in named.items():
        if name.lower() in seen:
            raise MigrationError(f"{option} {name} is the same table as {seen[name.lower()]}; the backup, the "
                                 "legacy table and the events table must be three different tables "
                                 "(nothing was changed)")
        seen[name.lower()] = f"{option} {name}"


@dataclass
class Comparison:
    """How the backup stands to the legacy table, row by row."""

    exists: bool
    same_columns: bool = True
    rows: int = 0  # in the legacy table
    missing: list[Any] = field(default_factory=list)  # ids in the legacy table, not in the backup
    changed: list[Any] = field(default_factory=list)  # ids whose row differs from its copy
    extra: list[Any] = field(default_factory=list)  # ids in the backup only: deleted from the legacy table
    counts: dict[str, int] = field(default_factory=lambda: {"missing": 0, "changed": 0, "extra": 0})

    @property
    def covers(self) -> bool:
        """Every legacy row is in the backup, unchanged: dropping the legacy table loses nothing."""
        return self.exists and self.same_columns and not self.counts["missing"] and not self.counts["changed"]

    def add(self, kind: str, row_id: Any) -> None:
        self.counts[kind] += 1
        ids: list[Any] = getattr(self, kind)
        if len(ids) < _SHOWN:
            ids.append(row_id)


def _digests(db: Database, table: str, columns: list[str], chunk: int,
             progress: Progress | None) -> Iterator[tuple[Any, bytes]]:
    id_at = columns.index("id")
    for page in rows_by_id(db, table, columns, chunk):
        for row in page:
            yield row[id_at], hashlib.blake2b(repr(row).encode("utf-8", "backslashreplace"), digest_size=16).digest()
        if progress is not None:
            progress.advance(len(page))


def compare(db: Database, source: str, backup: str, chunk: int, *, show_progress: bool = False) -> Comparison:
    """Both tables read once each, in id order, side by side."""
    if not db.table_exists(backup):
        return Comparison(exists=False)
    columns = db.columns(source)
    if set(db.columns(backup)) != set(columns):
        return Comparison(exists=True, same_columns=False)
    result = Comparison(exists=True, rows=row_count(db, source))
    bar = Progress(f"compare {source} with {backup}", result.rows, unit="rows", quiet=not show_progress)
    mine = _digests(db, source, columns, chunk, bar)
    theirs = _digests(db, backup, columns, chunk, None)
    left, right = next(mine, None), next(theirs, None)
    while left is not None or right is not None:
        if right is None or (left is not None and left[0] < right[0]):
            result.add("missing", left[0])  # type: ignore[index]
            left = next(mine, None)
        elif left is None or right[0] < left[0]:
            result.add("extra", right[0])
            right = next(theirs, None)
        else:
            if left[1] != right[1]:
                result.add("changed", left[0])
            left, right = next(mine, None), next(theirs, None)
    bar.finish()
    return result


def _ids(ids: list[Any], count: int) -> str:
    shown = ", ".join(str(i) for i in ids)
    return f"id {shown}" if count == 1 else f"ids {shown}{', …' if count > len(ids) else ''}"


def explain(state: Comparison, source: str, backup: str) -> str:
    """Why the backup cannot serve, and what is safe to do next."""
    if not state.same_columns:
        why = f"{backup} has other columns than {source}, so it is not a copy of it."
    else:
        parts = []
        missing, changed = state.counts["missing"], state.counts["changed"]
        if missing:
            parts.append(f"{missing} row{'s' if missing != 1 else ''} of {source} "
                         f"({_ids(state.missing, missing)}) {'are' if missing != 1 else 'is'} not in {backup}: "
                         f"written after the backup was made, most likely by code that still logs to {source}")
        if changed:
            parts.append(f"{changed} row{'s' if changed != 1 else ''} of {source} ({_ids(state.changed, changed)}) "
                         f"differ{'s' if changed == 1 else ''} from {'their copies' if changed != 1 else 'its copy'} "
                         "in the backup: changed after the backup was made")
        why = "; ".join(parts) + "."
    return (f"{why} {backup} was left as it is, and nothing else was changed. Safe next steps: make sure nothing "
            f"writes to {source} any more (cofi-eventlog check-refs on the code; cofi-eventlog verify on a new "
            f"batch), then run again with --backup-table {backup}_2 for a new, complete backup. Keep {backup} "
            "until you no longer need it.")


def describe(state: Comparison, backup: str) -> str:
    """A usable backup, in one line."""
    extra = state.counts["extra"]
    also = (f", and {extra} row{'s' if extra != 1 else ''} since deleted from the legacy table "
            f"({_ids(state.extra, extra)})" if extra else "")
    return f"{backup} already holds all {state.rows:,} rows, unchanged{also}"


def create(db: Database, source: str, backup: str) -> int:
    """Copy under a new name of our own, then rename: an interrupted copy never looks like a backup, and
    no table but the one made here is ever dropped."""
    partial = f"{backup[:40]}_partial_{secrets.token_hex(6)}"
    quoted = db.name(partial)
    if db.dialect == "mysql":
        db.execute(f"CREATE TABLE {quoted} LIKE {db.name(source)}")  # fails, rather than reuse, if it exists
        try:
            db.execute(f"INSERT INTO {quoted} SELECT * FROM {db.name(source)}")
            db.execute(f"RENAME TABLE {quoted} TO {db.name(backup)}")
        except BaseException:
            db.execute(f"DROP TABLE {quoted}")
            raise
    else:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(f"CREATE TABLE {quoted} AS SELECT * FROM {db.name(source)}")
            db.execute(f"ALTER TABLE {quoted} RENAME TO {db.name(backup)}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return row_count(db, backup)


def drop_if_covered(db: Database, source: str, backup: str, chunk: int) -> Comparison:
    """Drop ``source`` if the backup still holds every row of it, unchanged. The comparison and the drop run
    under a lock (LOCK TABLES on MySQL, a write transaction on SQLite), so no row can arrive between them."""
    if db.dialect == "mysql":
        db.execute(f"LOCK TABLES {db.name(source)} WRITE, {db.name(backup)} READ")
        try:
            state = compare(db, source, backup, chunk)
            if state.covers:
                db.execute(f"DROP TABLE {db.name(source)}")
        finally:
            db.execute("UNLOCK TABLES")
        return state
    db.execute("BEGIN IMMEDIATE")
    try:
        state = compare(db, source, backup, chunk)
        if state.covers:
            db.execute(f"DROP TABLE {db.name(source)}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return state
