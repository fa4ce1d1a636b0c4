"""The backup: a full copy of the legacy table, and the rollback path once that table is dropped.

A backup that already holds the same rows (count and a digest of every row in id order) is kept as
it is, so re-running costs a read and changes nothing; one that differs is never overwritten.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ...database import Database
from ..progress import Progress
from .source import row_count, rows_by_id


@dataclass(frozen=True)
class BackupState:
    action: str  # 'create', 'identical' or 'differs'
    reason: str


def backup_name(source: str) -> str:
    return f"{source}_backup"


def digest(db: Database, table: str, columns: list[str], chunk: int, progress: Progress | None = None) -> str:
    """A digest of every row, in id order, over the given columns."""
    hasher = hashlib.sha256()
    for page in rows_by_id(db, table, columns, chunk):
        for row in page:
            hasher.update(repr(row).encode("utf-8", "backslashreplace"))
            hasher.update(b"\n")
        if progress is not None:
            progress.advance(len(page))
    if progress is not None:
        progress.finish()
    return hasher.hexdigest()


def compare(db: Database, source: str, backup: str, chunk: int, *, show_progress: bool) -> BackupState:
    if not db.table_exists(backup):
        return BackupState("create", f"{backup} does not exist")
    columns = db.columns(source)
    if set(db.columns(backup)) != set(columns):
        return BackupState("differs", f"{backup} has other columns than {source}")
    rows, kept = row_count(db, source), row_count(db, backup)
    if rows != kept:
        return BackupState("differs", f"{backup} holds {kept} rows, {source} holds {rows}")
    mine = digest(db, source, columns, chunk, Progress(f"checksum {source}", rows) if show_progress else None)
    theirs = digest(db, backup, columns, chunk, Progress(f"checksum {backup}", rows) if show_progress else None)
    if mine != theirs:
        return BackupState("differs", f"{backup} holds {kept} rows like {source}, but their contents differ")
    return BackupState("identical", f"{backup} already holds the same {rows} rows")


def create(db: Database, source: str, backup: str) -> int:
    """Copy under a temporary name, then rename: an interrupted copy never looks like a backup."""
    partial = db.name(f"{backup}_partial"[:64])
    db.execute(f"DROP TABLE IF EXISTS {partial}")
    if db.dialect == "mysql":
        db.execute(f"CREATE TABLE {partial} LIKE {db.name(source)}")
        db.execute(f"INSERT INTO {partial} SELECT * FROM {db.name(source)}")
        db.execute(f"RENAME TABLE {partial} TO {db.name(backup)}")
    else:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(f"CREATE TABLE {partial} AS SELECT * FROM {db.name(source)}")
            db.execute(f"ALTER TABLE {partial} RENAME TO {db.name(backup)}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return row_count(db, backup)
