"""A small DB-API wrapper for the tools: one connection, either dialect, ``%s`` placeholders.

The tools (migrate, verify, report, simulate) speak SQL that both MariaDB and SQLite understand;
this hides the two differences they meet: the placeholder style and identifier quoting.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any, TypeVar

from .sinks import mysql, mysql_connect, sqlite
from .sinks.base import COLUMNS, is_identifier, skip_duplicates
from .sinks.dsn import Dsn, parse_dsn

DEFAULT_TABLE = "batchExecutionLog"
_C = TypeVar("_C", bound="Connection")


def create_table_sql(dialect: str, table: str = DEFAULT_TABLE) -> str:
    """The events table's DDL for 'mysql' or 'sqlite'."""
    if not is_identifier(table):
        raise ValueError(f"table must be a plain identifier, got {table!r}")
    if dialect == "mysql":
        return mysql.create_table_sql(table)
    if dialect == "sqlite":
        return sqlite.create_table_sql(table)
    raise ValueError(f"unknown dialect {dialect!r}")


class MissingDatabase(ValueError):
    """The SQLite file a reading tool was pointed at does not exist (opening it would create it)."""


class Connection:
    """One connection to either dialect, closed by ``with``; names go through :meth:`name`."""

    conn: Any

    def __init__(self, dsn: str | Dsn) -> None:
        self.dsn = parse_dsn(dsn) if isinstance(dsn, str) else dsn
        self.dialect = self.dsn.dialect

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dsn.redacted()!r})"

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def name(self, identifier: str) -> str:
        """A quoted identifier; refuses anything but a plain one."""
        if not is_identifier(identifier):
            raise ValueError(f"not a plain identifier: {identifier!r}")
        return f"`{identifier}`" if self.dialect == "mysql" else f'"{identifier}"'

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of a query; each kind of connection runs it its own way (the Reader only reads)."""
        raise NotImplementedError

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.fetchall(sql, params)
        return rows[0][0] if rows else None

    def table_exists(self, table: str) -> bool:
        if self.dialect == "mysql":
            return bool(self.scalar("SELECT COUNT(*) FROM information_schema.tables "
                                    "WHERE table_schema = DATABASE() AND table_name = %s", (table,)))
        return bool(self.scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = %s", (table,)))


class Database(Connection):
    """Reads and writes. ``sql`` uses ``%s`` placeholders and backtick-free names."""

    def __init__(self, dsn: str | Dsn, *, timeout: float = 30.0, must_exist: bool = False) -> None:
        super().__init__(dsn)
        if must_exist and self.dialect == "sqlite" and not os.path.exists(self.dsn.path):
            raise MissingDatabase(f"no database at {self.dsn.path}")
        if self.dialect == "mysql":
            self.conn = mysql_connect.connect(self.dsn, timeout=timeout, autocommit=True)
        else:
            self.conn = sqlite.connect(self.dsn.path, timeout=timeout)

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "mysql" else sql.replace("%s", "?")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the affected row count."""
        cur = self.conn.cursor()
        try:
            cur.execute(self._sql(sql), tuple(params))
            return int(cur.rowcount)
        finally:
            cur.close()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        cur = self.conn.cursor()
        try:
            cur.executemany(self._sql(sql), [tuple(r) for r in rows])
            return int(cur.rowcount)
        finally:
            cur.close()

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        try:
            cur.execute(self._sql(sql), tuple(params))
            return list(cur.fetchall())
        finally:
            cur.close()

    def columns(self, table: str) -> list[str]:
        if self.dialect == "mysql":
            rows = self.fetchall("SELECT column_name FROM information_schema.columns "
                                 "WHERE table_schema = DATABASE() AND table_name = %s ORDER BY ordinal_position",
                                 (table,))
            return [r[0] for r in rows]
        return [r[1] for r in self.fetchall(f"PRAGMA table_info({self.name(table)})")]

    def insert_events_sql(self, table: str = DEFAULT_TABLE) -> str:
        """An INSERT of every event column (``%s`` placeholders) that skips rows whose eventId is stored."""
        columns = ", ".join(self.name(c) for c in COLUMNS)
        return (f"INSERT INTO {self.name(table)} ({columns}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
                + skip_duplicates(self.dialect))

    def create_events_table(self, table: str = DEFAULT_TABLE) -> None:
        ddl = create_table_sql(self.dialect, table)
        if self.dialect == "mysql":
            self.execute(ddl)
        else:
            assert isinstance(self.conn, sqlite3.Connection)
            self.conn.executescript(ddl)
