"""``cofi-eventlog init-db``: create the events table, or bring an older one up to date.

An existing ``batchExecutionLog`` (for example one an earlier logger made, keyed by an AUTO_INCREMENT
id) gets the columns and indexes it lacks. The wanted shape is read from the library's own DDL, so
this command never holds a second copy of the schema.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from typing import Any

from ..database import DEFAULT_TABLE, Database, create_table_sql

_MYSQL_COLUMN = re.compile(r"^\s*`(\w+)` (.+?),?$")
_MYSQL_KEY = re.compile(r"^\s*KEY `(\w+)` \((.+)\),?$")
_SQLITE_COLUMN = re.compile(r"^\s*(\w+) ([A-Z].*?),?$")
_SQLITE_INDEX = re.compile(r'^CREATE INDEX IF NOT EXISTS "(\w+)" ON "\w+" \((.+)\);?$')


@dataclass(frozen=True)
class Step:
    """One change to the database, with the reason a person reads before it runs."""

    why: str
    sql: str


def wanted_columns(dialect: str, table: str) -> dict[str, str]:
    """Column name → its definition in the library's DDL, in table order."""
    pattern = _MYSQL_COLUMN if dialect == "mysql" else _SQLITE_COLUMN
    columns: dict[str, str] = {}
    for line in create_table_sql(dialect, table).splitlines()[1:]:
        match = pattern.match(line)
        if match and not line.lstrip().startswith(("PRIMARY", "KEY", "CREATE", ")")):
            columns[match.group(1)] = match.group(2)
    return columns


def wanted_indexes(dialect: str, table: str) -> dict[str, tuple[str, ...]]:
    """Index name → its columns, as the library's DDL declares them."""
    pattern = _MYSQL_KEY if dialect == "mysql" else _SQLITE_INDEX
    indexes: dict[str, tuple[str, ...]] = {}
    for line in create_table_sql(dialect, table).splitlines():
        match = pattern.match(line)
        if match:
            indexes[match.group(1)] = tuple(c.strip().strip("`\"") for c in match.group(2).split(","))
    return indexes


def existing_indexes(db: Database, table: str) -> list[tuple[tuple[str, ...], bool]]:
    """Every index of the table (the primary key included) as (columns, unique)."""
    if db.dialect == "mysql":
        rows = db.fetchall("SELECT index_name, non_unique, column_name FROM information_schema.statistics "
                           "WHERE table_schema = DATABASE() AND table_name = %s ORDER BY index_name, seq_in_index",
                           (table,))
        grouped: dict[str, tuple[list[str], bool]] = {}
        for name, non_unique, column in rows:
            grouped.setdefault(name, ([], not int(non_unique)))[0].append(column)
        return [(tuple(cols), unique) for cols, unique in grouped.values()]
    found = [(tuple(r[2] for r in db.fetchall(f"PRAGMA index_info({db.name(name)})")), bool(unique))
             for _, name, unique, *_ in db.fetchall(f"PRAGMA index_list({db.name(table)})")]
    primary = tuple(r[1] for r in sorted(db.fetchall(f"PRAGMA table_info({db.name(table)})"), key=lambda r: r[5])
                    if r[5])
    return [*found, (primary, True)] if primary else found


def blocking_columns(db: Database, table: str, wanted: dict[str, str]) -> list[str]:
    """Columns of ours it does not know that need a value on every insert: the logger could never write."""
    if db.dialect == "mysql":
        rows = db.fetchall("SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() "
                           "AND table_name = %s AND is_nullable = 'NO' AND column_default IS NULL "
                           "AND extra NOT LIKE %s AND extra NOT LIKE %s", (table, "%auto_increment%", "%GENERATED%"))
        names = [r[0] for r in rows]
    else:
        info = db.fetchall(f"PRAGMA table_info({db.name(table)})")
        names = [r[1] for r in info if r[3] and r[4] is None and not (r[5] and r[2].upper() == "INTEGER")]
    return [n for n in names if n not in wanted]


def upgrade_steps(db: Database, table: str) -> list[Step]:
    """What an existing table lacks. Added columns allow NULL: rows already there have no value for them."""
    wanted = wanted_columns(db.dialect, table)
    present = set(db.columns(table))
    quoted = db.name(table)
    steps: list[Step] = []
    for column, definition in wanted.items():
        if column in present:
            continue
        loose = definition.replace(" NOT NULL", "").replace(" PRIMARY KEY", "")
        if db.dialect == "mysql" and not loose.endswith(" NULL"):
            loose += " NULL"
        steps.append(Step(f"add column {column}", f"ALTER TABLE {quoted} ADD COLUMN {db.name(column)} {loose}"))
    indexes = existing_indexes(db, table)
    if not any(cols[:1] == ("eventId",) and unique for cols, unique in indexes):
        name = "uq_eventId" if db.dialect == "mysql" else f"{table}_eventId"
        steps.append(Step("make eventId unique, so a retried write never duplicates a row",
                          _index_sql(db, table, name, ("eventId",), unique=True)))
    for name, columns in wanted_indexes(db.dialect, table).items():
        if not any(cols[: len(columns)] == columns for cols, _ in indexes):
            steps.append(Step(f"add index on ({', '.join(columns)})", _index_sql(db, table, name, columns)))
    return steps


def _index_sql(db: Database, table: str, name: str, columns: tuple[str, ...], *, unique: bool = False) -> str:
    kind = "UNIQUE INDEX" if unique else "INDEX"
    cols = ", ".join(db.name(c) for c in columns)
    return f"CREATE {kind} {db.name(name)} ON {db.name(table)} ({cols})"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("init-db", help="create or upgrade the events table",
                                   description=(__doc__ or "").split("``: ", 1)[-1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="mysql://user:pass@host:3306/db or sqlite:///path")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="events table (default: %(default)s)")
    parser.add_argument("--print-sql", action="store_true",
                        help="print the SQL instead of running it (with --dsn: what this database needs)")
    parser.add_argument("--dialect", choices=("mysql", "sqlite"), default="mysql",
                        help="for --print-sql without --dsn (default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.dsn is None:
        if not args.print_sql:
            print("init-db: --dsn is required (or use --print-sql)", file=sys.stderr)
            return 2
        print(create_table_sql(args.dialect, args.table) + ";")
        return 0
    with Database(args.dsn) as db:
        table = args.table
        db.name(table)
        if not db.table_exists(table):
            if args.print_sql:
                print(create_table_sql(db.dialect, table) + ";")
                return 0
            db.create_events_table(table)
            print(f"created {table} in {db.dsn.redacted()}")
            return 0
        steps = upgrade_steps(db, table)
        blockers = blocking_columns(db, table, wanted_columns(db.dialect, table))
        for step in steps:
            if args.print_sql:
                print(f"-- {step.why}\n{step.sql};")
            else:
                db.execute(step.sql)
                print(f"{table}: {step.why}")
        if not steps:
            print(f"{'-- ' if args.print_sql else ''}{table} is up to date")
        if blockers:
            print(f"{table}: column(s) {', '.join(blockers)} need a value on every insert and the logger does not "
                  "write them; give them a default or allow NULL", file=sys.stderr)
            return 1
    return 0
