"""``cofi-eventlog init-db``: create the events table, or bring an older one up to date.

An existing ``batchExecutionLog`` (one an earlier logger made, keyed by an AUTO_INCREMENT id, with
narrower columns) is compared with the library's own DDL column by column: type, width, precision,
character set and NULL rule, then indexes. What is missing is added and what is narrower is widened;
nothing is ever narrowed or dropped. What cannot be widened safely is named, and the command exits 1.
``--print-sql`` shows the plan without running it, with the lock each statement takes.

On MySQL/MariaDB each change runs with the least locking the server offers for it (ALGORITHM=INSTANT,
else INPLACE with LOCK=NONE), found by trying it on an empty table of the same definition; a change that
needs a copy of the whole table (writers wait for all of it) runs only with ``--allow-copy``. Every
statement waits at most ``--lock-wait-timeout`` seconds for the table's metadata lock, so an open
transaction cannot queue the writers behind init-db for long. A table holding the same eventId twice
cannot take the unique key until ``--dedupe`` keeps the first of each.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pymysql

from ..database import DEFAULT_TABLE, Database, create_table_sql
from ..sinks import SinkError
from ..sinks.columns import Column, declared, describe, mysql_columns, review, sqlite_columns
from .command import add_command
from .dsn_option import add_dsn_option, dsn_from

_MYSQL_INDEX = re.compile(r"^\s*(?:UNIQUE |FULLTEXT )?(?:KEY|INDEX) `(\w+)` \((.+)\),?$")
_SQLITE_INDEX = re.compile(r'^CREATE (?:UNIQUE )?INDEX IF NOT EXISTS "(\w+)" ON "\w+" \((.+)\);?$')


# The ways MySQL/MariaDB can make a change, least locking first: (clause, the lock it takes, in words).
INSTANT = ("ALGORITHM=INSTANT", "no lock: the table's definition only, instant")
INPLACE = ("ALGORITHM=INPLACE, LOCK=NONE", "no lock on rows: built in place while writers go on")
COPY = ("ALGORITHM=COPY, LOCK=SHARED", "SHARED for the whole table copy: every INSERT waits until it ends")
LEVELS = (INSTANT, INPLACE, COPY)
# The server's "not this way": 1845/1846 ALGORITHM/LOCK not supported for the operation; 1800 and 1064 from a
# server that does not know ALGORITHM=INSTANT at all.
NOT_THIS_WAY = frozenset({1845, 1846, 1800, 1064})
MDL_NOTE = ("each statement also takes the table's metadata lock for a moment at its start and end, waiting "
            "at most --lock-wait-timeout for it")
SQLITE_LOCK = "the database's write lock for the statement (SQLite has one writer at a time)"


@dataclass(frozen=True)
class Step:
    """One statement, with the reasons a person reads before it runs and the lock it takes."""

    why: tuple[str, ...]
    sql: str
    lock: str = ""
    copy: bool = False  # needs a copy of the whole table: run only with --allow-copy
    dedupe: bool = False  # deletes the later copies of each eventId: run only with --dedupe


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what init-db will not change
    duplicates: int = 0  # rows that repeat an eventId already stored


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


def plan(db: Database, table: str, *, dedupe: bool = False, allow_copy: bool = False) -> Plan:
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
    indexes = existing_indexes(db, table)
    index_changes: list[tuple[str, str, tuple[str, ...], bool]] = []  # (why, name, columns, unique)
    if not any(cols == ("eventId",) and unique for cols, unique in indexes):
        repeated = 0
        if "eventId" in present:
            result.duplicates, repeated = count_duplicates(db, table)
        if result.duplicates and not dedupe:
            result.problems.append(
                f"eventId holds {result.duplicates:,} duplicate row(s) ({repeated:,} id(s) stored more than once), "
                "so the unique key cannot be added; `init-db --dedupe` keeps the first of each and deletes the "
                "others (see them with --dedupe --print-sql)")
        else:
            name = "uq_eventId" if db.dialect == "mysql" else f"{table}_eventId"
            index_changes.append(("make eventId unique, so a retried write never duplicates a row", name,
                                  ("eventId",), True))
    for name, columns in wanted_indexes(db.dialect, table).items():
        if not any(cols[: len(columns)] == columns for cols, _ in indexes):
            index_changes.append((f"add index on ({', '.join(columns)})", name, columns, False))
    dedupe_step = _dedupe_step(db, table, present, indexes, result.duplicates) \
        if result.duplicates and dedupe else None
    if db.dialect == "mysql":
        clauses: list[tuple[tuple[str, ...], str]] = [((why,), clause) for why, clause in changes]
        if index_changes:
            clauses.append((tuple(w for w, *_ in index_changes),
                            ", ".join(_add_index(db, n, c, u) for _, n, c, u in index_changes)))
        steps = _least_locking(db, table, clauses)
        if dedupe_step is not None:  # after the columns (eventId may be widened), before the unique key
            steps.insert(len(steps) - 1 if index_changes else len(steps), dedupe_step)
        for step in steps:
            if step.copy and not allow_copy:
                result.problems.append(f"{'; '.join(step.why)}: needs a copy of the whole table, during which "
                                       "every INSERT waits; run init-db --allow-copy at a quiet time, or make the "
                                       "change with pt-online-schema-change or gh-ost (docs/production-databases.md)")
        result.steps = steps
    else:  # SQLite takes one column per ALTER TABLE
        quoted = db.name(table)
        result.steps.extend(Step((why, ), f"ALTER TABLE {quoted} {clause}", SQLITE_LOCK) for why, clause in changes)
        if dedupe_step is not None:
            result.steps.append(dedupe_step)
        result.steps.extend(Step((why,), _index_sql(db, table, name, columns, unique=unique), SQLITE_LOCK)
                            for why, name, columns, unique in index_changes)
    blockers = blocking_columns(db, table, wanted)
    if blockers:
        result.problems.append(f"column(s) {', '.join(blockers)} need a value on every insert and the logger does "
                               "not write them; give them a default or allow NULL")
    return result


def count_duplicates(db: Database, table: str) -> tuple[int, int]:
    """(rows that repeat an eventId already stored, eventIds stored more than once). NULLs are no duplicates."""
    rows, ids = db.fetchall(f"SELECT COALESCE(SUM(n), 0), COUNT(*) FROM (SELECT COUNT(*) AS n FROM {db.name(table)} "
                            "WHERE eventId IS NOT NULL GROUP BY eventId HAVING COUNT(*) > 1) d")[0]
    return int(rows) - int(ids), int(ids)


def _dedupe_step(db: Database, table: str, present: dict[str, Column],
                 indexes: list[tuple[tuple[str, ...], bool]], duplicates: int) -> Step:
    """The DELETE that keeps the first row of each eventId: the one with the smallest key (an AUTO_INCREMENT
    id, SQLite's rowid), the earliest createdAt where the table has no other key."""
    why = (f"remove {duplicates:,} duplicate row(s), keeping the first of each eventId",)
    name = db.name(table)
    if db.dialect == "sqlite":
        return Step(why, f"DELETE FROM {name} WHERE eventId IS NOT NULL AND rowid NOT IN (SELECT MIN(rowid) FROM "
                         f"{name} WHERE eventId IS NOT NULL GROUP BY eventId)", SQLITE_LOCK, dedupe=True)
    keys = [cols[0] for cols, unique in indexes if unique and len(cols) == 1 and cols[0] != "eventId"
            and cols[0] in present and not present[cols[0]].nullable]
    lock = "row locks on the deleted rows only (READ COMMITTED): writers go on"
    if keys:
        key = db.name(keys[0])
        return Step(why, f"DELETE later FROM {name} AS later JOIN (SELECT eventId, MIN({key}) AS keep FROM {name} "
                         f"WHERE eventId IS NOT NULL GROUP BY eventId HAVING COUNT(*) > 1) AS first "
                         f"ON later.eventId = first.eventId AND later.{key} > first.keep", lock, dedupe=True)
    return Step((*why, "the table has no other key: each duplicated eventId in turn, the latest copies first"),
                f"DELETE FROM {name} WHERE eventId = %s ORDER BY createdAt DESC LIMIT %s", lock, dedupe=True)


def _add_index(db: Database, name: str, columns: tuple[str, ...], unique: bool) -> str:
    return f"ADD {'UNIQUE ' if unique else ''}INDEX `{name}` ({', '.join(db.name(c) for c in columns)})"


def _least_locking(db: Database, table: str, clauses: list[tuple[tuple[str, ...], str]]) -> list[Step]:
    """Each ALTER with the least locking the server takes it with, tried in turn on an empty table of the
    same definition (an empty table changes at once, whatever the algorithm): the server's own answer,
    not a guess from its version."""
    if not clauses:
        return []
    probe = f"{table[:40]}_probe_{os.urandom(4).hex()}"
    db.execute(f"CREATE TABLE {db.name(probe)} LIKE {db.name(table)}")
    steps = []
    try:
        for why, clause in clauses:
            for level in LEVELS:
                try:
                    db.execute(f"ALTER TABLE {db.name(probe)} {clause}, {level[0]}")
                except pymysql.MySQLError as exc:
                    if exc.args and exc.args[0] in NOT_THIS_WAY and level is not COPY:
                        continue
                    raise
                lines = [f"ALTER TABLE {db.name(table)}", *clause.split(", ADD "), level[0]]
                steps.append(Step(why, "\n  ".join(lines[:2]) + "".join(f",\n  ADD {c}" for c in lines[2:-1])
                                  + f",\n  {level[0]}", level[1], copy=level is COPY))
                break
    finally:
        db.execute(f"DROP TABLE IF EXISTS {db.name(probe)}")
    return steps


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
    parser.add_argument("--dedupe", action="store_true",
                        help="delete the later copies of each eventId stored more than once, so the unique key "
                             "can be added; says how many (see them first with --print-sql)")
    parser.add_argument("--allow-copy", action="store_true",
                        help="run changes that copy the whole table (every INSERT waits until the copy ends)")
    parser.add_argument("--lock-wait-timeout", type=int, default=10, metavar="SECONDS",
                        help="how long a statement waits for the table's metadata lock, on MySQL/MariaDB, while "
                             "new INSERTs queue behind it (default: %(default)s)")
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
            return _bring_up_to_date(db, args)
    except (SinkError, ValueError) as exc:
        print(f"init-db: {exc}", file=sys.stderr)
        return 2
    except (pymysql.MySQLError, sqlite3.Error) as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if code == 1205:
            print(f"init-db: the table's metadata lock was not free within --lock-wait-timeout: a transaction "
                  f"holds it (SHOW PROCESSLIST); nothing was changed by the statement, run init-db again: {exc}",
                  file=sys.stderr)
        else:
            print(f"init-db: the database refused a change: {exc}", file=sys.stderr)
        return 1


def _bring_up_to_date(db: Database, args: argparse.Namespace) -> int:
    table, print_sql = args.table, args.print_sql
    db.name(table)
    if not db.table_exists(table):
        if print_sql:
            print(create_table_sql(db.dialect, table) + ";")
            return 0
        db.create_events_table(table)
        print(f"created {table} in {db.dsn.redacted()}")
        return 0
    found = plan(db, table, dedupe=args.dedupe, allow_copy=args.allow_copy)
    if db.dialect == "mysql" and not print_sql:
        db.execute("SET SESSION lock_wait_timeout = %s", (max(1, args.lock_wait_timeout),))
    if print_sql and found.steps and db.dialect == "mysql":
        print(f"-- {MDL_NOTE} ({args.lock_wait_timeout} s)")
    for step in found.steps:
        if step.copy and not args.allow_copy:
            if print_sql:
                print("\n".join(f"-- {why}" for why in step.why) + f"\n-- lock: {step.lock}\n-- skipped: needs "
                      f"--allow-copy\n-- {step.sql.replace(chr(10), chr(10) + '-- ')};")
            continue
        if print_sql:
            print("\n".join(f"-- {why}" for why in step.why) + f"\n-- lock: {step.lock}\n{step.sql};")
        elif step.dedupe:
            removed = _unbounded(db, partial(_dedupe, db, table, step))
            print(f"{table}: removed {removed:,} duplicate row(s), kept the first of each eventId")
        else:
            _unbounded(db, partial(db.execute, step.sql))
            print("\n".join(f"{table}: {why}" for why in step.why))
    if not found.steps:
        print(f"{'-- ' if print_sql else ''}{table} is up to date" + (" as far as init-db can bring it"
                                                                       if found.problems else ""))
    for problem in found.problems:
        print(f"{table}: {problem}", file=sys.stderr)
    return 1 if found.problems else 0


def _unbounded(db: Database, run: Callable[[], int]) -> int:
    """Run a change without the connection's read timeout: an index on a large table takes minutes, and the
    server's lock_wait_timeout already bounds the only wait that would hold writers up."""
    if db.dialect != "mysql":
        return run()
    saved = db.conn._read_timeout
    db.conn._read_timeout = None
    try:
        return run()
    finally:
        db.conn._read_timeout = saved


def _dedupe(db: Database, table: str, step: Step) -> int:
    """Run the dedupe step; READ COMMITTED, so the DELETE locks only the rows it deletes, not all it reads."""
    if db.dialect == "mysql":
        db.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    if "%s" not in step.sql:
        return db.execute(step.sql)
    removed = 0
    name = db.name(table)
    for event_id, copies in db.fetchall(f"SELECT eventId, COUNT(*) FROM {name} WHERE eventId IS NOT NULL "
                                        "GROUP BY eventId HAVING COUNT(*) > 1"):
        removed += db.execute(step.sql, (event_id, int(copies) - 1))
    return removed
