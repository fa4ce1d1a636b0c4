"""``cofi-eventlog init-db``: create the events table, or bring an older one up to date.

An existing ``batchExecutionLog`` (one an earlier logger made, keyed by an AUTO_INCREMENT id, with
narrower columns) is compared with the library's own DDL column by column: type, width, precision,
character set and NULL rule, then indexes. What is missing is added and what is narrower is widened, in
one ALTER TABLE; nothing is ever narrowed or dropped. What cannot be widened safely is named, and the
command exits 1. ``--print-sql`` shows the plan without running it.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
from dataclasses import dataclass, field
from typing import Any

import pymysql

from ..database import DEFAULT_TABLE, Database, create_table_sql
from ..sinks import SinkError
from ..sinks.columns import Column, declared, describe, mysql_columns, review, sqlite_columns
from .command import add_command
from .dsn_option import add_dsn_option, dsn_from

_MYSQL_INDEX = re.compile(r"^\s*(?:UNIQUE |FULLTEXT )?(?:KEY|INDEX) `(\w+)` \((.+)\),?$")
_SQLITE_INDEX = re.compile(r'^CREATE (?:UNIQUE )?INDEX IF NOT EXISTS "(\w+)" ON "\w+" \((.+)\);?$')


@dataclass(frozen=True)
class Step:
    """One statement, with the reasons a person reads before it runs."""

    why: tuple[str, ...]
    sql: str


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what init-db will not change


def wanted_columns(dialect: str, table: str) -> dict[str, Column]:
    """The library's columns, read from its own DDL, in table order."""
    return declared(dialect, create_table_sql(dialect, table))


def wanted_indexes(dialect: str, table: str) -> dict[str, tuple[str, ...]]:
    """Index name → its columns, for every secondary index the library's DDL declares."""
    pattern = _MYSQL_INDEX if dialect == "mysql" else _SQLITE_INDEX
    indexes: dict[str, tuple[str, ...]] = {}
    for line in create_table_sql(dialect, table).splitlines():
        match = pattern.match(line)
        if match:
            indexes[match.group(1)] = tuple(c.strip().strip("`\"") for c in match.group(2).split(","))
    return indexes


def existing_columns(db: Database, table: str) -> dict[str, Column]:
    if db.dialect == "mysql":
        with db.conn.cursor() as cur:
            return mysql_columns(cur, table)
    assert isinstance(db.conn, sqlite3.Connection)
    return sqlite_columns(db.conn, table)


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
    # table-valued pragmas take the name as a parameter: SQLite's own index names need not be identifiers
    found = [(tuple(r[0] for r in db.fetchall("SELECT name FROM pragma_index_info(%s) ORDER BY seqno", (name,))),
              bool(unique)) for name, unique in db.fetchall("SELECT name, \"unique\" FROM pragma_index_list(%s)",
                                                            (table,))]
    primary = tuple(r[0] for r in db.fetchall("SELECT name FROM pragma_table_info(%s) WHERE pk > 0 ORDER BY pk",
                                              (table,)))
    return [*found, (primary, True)] if primary else found


def blocking_columns(db: Database, table: str, wanted: dict[str, Column]) -> list[str]:
    """Columns of the table the library does not know that need a value on every insert: it could never write."""
    if db.dialect == "mysql":
        rows = db.fetchall("SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() "
                           "AND table_name = %s AND is_nullable = 'NO' AND column_default IS NULL "
                           "AND extra NOT LIKE %s AND extra NOT LIKE %s", (table, "%auto_increment%", "%GENERATED%"))
        names = [r[0] for r in rows]
    else:
        info = db.fetchall("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(%s)", (table,))
        names = [r[0] for r in info if r[2] and r[3] is None and not (r[4] and str(r[1]).upper() == "INTEGER")]
    return [n for n in names if n not in wanted]


def plan(db: Database, table: str) -> Plan:
    """What an existing table needs. Added columns allow NULL: rows already there have no value for them."""
    wanted = wanted_columns(db.dialect, table)
    present = existing_columns(db, table)
    result = Plan()
    changes: list[tuple[str, str]] = []  # (why, clause)
    for name, want in wanted.items():
        have = present.get(name)
        if have is None:
            changes.append((f"add column {name}", f"ADD COLUMN {db.name(name)} {_added(db.dialect, want)}"))
            continue
        found = review(have, want)
        if found.blocked:
            result.problems.append(f"{name} {found.blocked}; init-db leaves it as it is")
        elif found.needed and db.dialect == "sqlite":
            result.problems.append(f"{name} {'; '.join(found.reasons)}: SQLite cannot change a column in place "
                                   f"(the logger stores an empty value there instead of NULL)")
        elif found.needed:
            nullable = have.nullable or want.nullable
            changes.append((f"widen {name}: {'; '.join(found.reasons)}",
                            f"MODIFY COLUMN {db.name(name)} {_restated(have, found.widen_to, nullable)}"))
    quoted = db.name(table)
    if db.dialect == "mysql" and changes:
        result.steps.append(Step(tuple(w for w, _ in changes),
                                 f"ALTER TABLE {quoted}\n  " + ",\n  ".join(c for _, c in changes)))
    else:  # SQLite takes one column per ALTER TABLE
        result.steps.extend(Step((why, ), f"ALTER TABLE {quoted} {clause}") for why, clause in changes)
    indexes = existing_indexes(db, table)
    if not any(cols[:1] == ("eventId",) and unique for cols, unique in indexes):
        name = "uq_eventId" if db.dialect == "mysql" else f"{table}_eventId"
        result.steps.append(Step(("make eventId unique, so a retried write never duplicates a row",),
                                 _index_sql(db, table, name, ("eventId",), unique=True)))
    for name, columns in wanted_indexes(db.dialect, table).items():
        if not any(cols[: len(columns)] == columns for cols, _ in indexes):
            result.steps.append(Step((f"add index on ({', '.join(columns)})",), _index_sql(db, table, name, columns)))
    blockers = blocking_columns(db, table, wanted)
    if blockers:
        result.problems.append(f"column(s) {', '.join(blockers)} need a value on every insert and the logger does "
                               "not write them; give them a default or allow NULL")
    return result


def upgrade_steps(db: Database, table: str) -> list[Step]:
    return plan(db, table).steps


def _added(dialect: str, want: Column) -> str:
    """A new column's definition: the library's type, NULL allowed."""
    if dialect == "sqlite":
        return want.type.upper()
    spelled = "JSON" if want.base == "json" else want.type.upper()
    return f"{spelled} NULL"


def _restated(have: Column, new_type: str | None, nullable: bool) -> str:
    """The column's whole definition for MODIFY, which forgets what it is not told: the default, ON UPDATE
    and the comment are restated as they are."""
    spelled = new_type or have.type
    parts = [spelled]
    if describe(have.name, spelled, nullable).kind == "text":
        keep = have.charset == "utf8mb4" and have.collation
        parts.append(f"CHARACTER SET utf8mb4 COLLATE {have.collation if keep else 'utf8mb4_bin'}")
    parts.append("NULL" if nullable else "NOT NULL")
    if have.default is not None:
        parts.append(f"DEFAULT {have.default}")
    if have.on_update:
        parts.append(f"ON UPDATE {have.on_update}")
    if have.comment:
        parts.append("COMMENT '" + have.comment.replace("\\", "\\\\").replace("'", "''") + "'")
    return " ".join(parts)


def _index_sql(db: Database, table: str, name: str, columns: tuple[str, ...], *, unique: bool = False) -> str:
    """The index names come from the library's DDL (word characters only) and, on SQLite, are the table's
    name and a suffix: they may be longer than a plain identifier, so they are quoted as they are."""
    kind = "UNIQUE INDEX" if unique else "INDEX"
    cols = ", ".join(db.name(c) for c in columns)
    quoted = f"`{name}`" if db.dialect == "mysql" else f'"{name}"'
    return f"CREATE {kind} {quoted} ON {db.name(table)} ({cols})"


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "init-db", "create or upgrade the events table", __doc__)
    add_dsn_option(parser)
    parser.add_argument("--table", default=DEFAULT_TABLE, help="events table (default: %(default)s)")
    parser.add_argument("--print-sql", action="store_true",
                        help="print the SQL instead of running it (with a DSN: what this database needs)")
    parser.add_argument("--dialect", choices=("mysql", "sqlite"), default="mysql",
                        help="for --print-sql without a DSN (default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        dsn = dsn_from(args)
        if dsn is None:
            if not args.print_sql:
                print("init-db: no database given: use --dsn, --dsn-file or $COFI_EVENTLOG_DSN "
                      "(or --print-sql for the DDL alone)", file=sys.stderr)
                return 2
            print(create_table_sql(args.dialect, args.table) + ";")
            return 0
        with Database(dsn) as db:
            return _bring_up_to_date(db, args.table, args.print_sql)
    except (SinkError, ValueError) as exc:
        print(f"init-db: {exc}", file=sys.stderr)
        return 2
    except (pymysql.MySQLError, sqlite3.Error) as exc:
        print(f"init-db: the database refused a change: {exc}", file=sys.stderr)
        return 1


def _bring_up_to_date(db: Database, table: str, print_sql: bool) -> int:
    db.name(table)
    if not db.table_exists(table):
        if print_sql:
            print(create_table_sql(db.dialect, table) + ";")
            return 0
        db.create_events_table(table)
        print(f"created {table} in {db.dsn.redacted()}")
        return 0
    found = plan(db, table)
    for step in found.steps:
        if print_sql:
            print("\n".join(f"-- {why}" for why in step.why) + f"\n{step.sql};")
        else:
            db.execute(step.sql)
            print("\n".join(f"{table}: {why}" for why in step.why))
    if not found.steps:
        print(f"{'-- ' if print_sql else ''}{table} is up to date" + (" as far as init-db can bring it"
                                                                       if found.problems else ""))
    for problem in found.problems:
        print(f"{table}: {problem}", file=sys.stderr)
    return 1 if found.problems else 0
