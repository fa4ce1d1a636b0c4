"""The legacy table as it actually is: which columns it has, what that forces us to assume, and its
rows in id order, a chunk at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ...database import Database
from .mapping import MigrationError

REQUIRED = ("id", "call_id", "batch_id", "stage_name")
OPTIONAL = ("status", "error_message", "input_payload", "created_at")
ASSUMED = {
    "status": "no status column: rows with an error_message become 'error' events, the others 'file_complete'",
    "error_message": "no error_message column: events carry no message",
    "input_payload": "no input_payload column: events carry no metadata",
    "created_at": "no created_at column: every createdAt is 1970-01-01, and eventIds order by id",
}


@dataclass
class LegacyTable:
    name: str
    columns: list[str]  # the ones migrate reads, in REQUIRED + OPTIONAL order
    assumptions: list[str] = field(default_factory=list)

    def has(self, column: str) -> bool:
        return column in self.columns


INTEGER_TYPES = ("tinyint", "smallint", "mediumint", "int", "bigint")


def column_types(db: Database, name: str) -> dict[str, str]:
    """Column → its declared type, lower case."""
    if db.dialect == "mysql":
        rows = db.fetchall("SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_schema = DATABASE() AND table_name = %s", (name,))
        return {str(c): str(t).lower() for c, t in rows}
    return {str(r[1]): str(r[2]).lower() for r in db.fetchall(f"PRAGMA table_info({db.name(name)})")}


def inspect(db: Database, name: str) -> LegacyTable:
    """The legacy table's usable columns and the assumptions its shape forces. Refuses, before anything
    changes, a table whose ids cannot order and name its rows: not integers, repeated, or NULL."""
    types = column_types(db, name)
    missing = [c for c in REQUIRED if c not in types]
    if missing:
        raise MigrationError(f"{name} lacks column(s) {', '.join(missing)}; it is not a processing_logs table")
    if db.dialect == "mysql" and types["id"] not in INTEGER_TYPES:
        raise MigrationError(f"{name}.id is {types['id']}; migrate needs integer ids, which every eventId keeps")
    if db.dialect == "sqlite":
        others = int(db.scalar(f"SELECT COUNT(*) FROM {db.name(name)} WHERE typeof(id) NOT IN ('integer', 'null')"))
        if others:
            raise MigrationError(f"{others} rows of {name} have an id that is not an integer; migrate needs "
                                 "integer ids, which every eventId keeps (nothing was changed)")
    rows, distinct, present = db.fetchall(f"SELECT COUNT(*), COUNT(DISTINCT {db.name('id')}), COUNT({db.name('id')}) "
                                          f"FROM {db.name(name)}")[0]
    if not int(rows) == int(distinct) == int(present):
        raise MigrationError(f"{name}.id must name one row each, but {int(rows) - int(present)} rows have no id "
                             f"and {int(present) - int(distinct)} repeat an id another row has (nothing was changed)")
    table = LegacyTable(name, [c for c in REQUIRED + OPTIONAL if c in types])
    table.assumptions = [ASSUMED[c] for c in OPTIONAL if c not in types]
    if db.dialect == "mysql" and table.has("created_at") and types["created_at"] != "timestamp":
        table.assumptions.append(f"created_at is {types['created_at']}, which holds no time zone: read as UTC")
    elif db.dialect == "sqlite" and table.has("created_at"):
        table.assumptions.append("created_at is SQLite text: read as UTC, as SQLite's 'now' is")
    return table


def rows_by_id(db: Database, table: str, columns: list[str], size: int) -> Iterator[list[tuple[Any, ...]]]:
    """Keyset pages in id order: each page costs the same however deep into the table it is."""
    select = ", ".join(db.name(c) for c in columns)
    id_at = columns.index("id")
    last: Any = None
    while True:
        where = "" if last is None else f"WHERE {db.name('id')} > %s "
        page = db.fetchall(f"SELECT {select} FROM {db.name(table)} {where}ORDER BY {db.name('id')} LIMIT {int(size)}",
                           () if last is None else (last,))
        if not page:
            return
        yield page
        last = page[-1][id_at]


def distinct_statuses(db: Database, table: LegacyTable) -> list[Any]:
    if not table.has("status"):
        return []
    return [r[0] for r in db.fetchall(f"SELECT DISTINCT {db.name('status')} FROM {db.name(table.name)}")]


def row_count(db: Database, table: str) -> int:
    return int(db.scalar(f"SELECT COUNT(*) FROM {db.name(table)}"))
