"""Embedded SQLite sink: WAL mode, one transaction of ``executemany`` per batch."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from .base import COLUMNS, Row, SinkError, insert_check_sql, iso_utc, no_unique_key, skip_duplicates
from .columns import declared, sqlite_columns, sqlite_unique_event_id
from .fit import Fitter


def create_table_sql(table: str) -> str:
    """DDL for SQLite; createdAt is ISO text in UTC so that it sorts and reads like MySQL's DATETIME(6)."""
    return f"""CREATE TABLE IF NOT EXISTS "{table}" (
  eventId BLOB NOT NULL PRIMARY KEY,
  batchId TEXT NOT NULL,
  stage TEXT,
  eventType TEXT NOT NULL,
  fileName TEXT,
  message TEXT,
  gpuIp TEXT,
  processed INTEGER,
  total INTEGER,
  metadata TEXT,
  createdAt TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS "{table}_batch_type_time" ON "{table}" (batchId, eventType, createdAt);
CREATE INDEX IF NOT EXISTS "{table}_batch_time" ON "{table}" (batchId, createdAt);
CREATE INDEX IF NOT EXISTS "{table}_time_type" ON "{table}" (createdAt, eventType);"""


def connect(path: str, *, timeout: float = 10.0) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL journal, waiting on locks."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class SQLiteSink:
    """Writes each batch in one transaction; a busy database is a transient error. SQLite bounds no
    type, so of an older table only a NOT NULL the library does not have is met (see fit.py)."""

    def __init__(self, path: str, table: str, *, create_table: bool = True, timeout: float = 10.0,
                 on_connect: Callable[[Any], None] | None = None) -> None:
        self.path = path
        self._on_connect = on_connect
        self.table = table
        self.statements = 0
        self.coerced = 0  # rows changed to fit the table's columns
        self._create = create_table
        self._fitter: Fitter | None = None
        self._timeout = timeout
        self._conn: sqlite3.Connection | None = None
        marks = ",".join("?" * len(COLUMNS))
        self._sql = f'INSERT INTO "{table}" ({",".join(COLUMNS)}) VALUES ({marks}){skip_duplicates("sqlite")}'

    def __repr__(self) -> str:
        return f"SQLiteSink({self.path!r}, table={self.table!r})"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn: sqlite3.Connection | None = None
            try:
                conn = connect(self.path, timeout=self._timeout)
                columns = sqlite_columns(conn, self.table)
                if not columns and self._create:
                    conn.executescript(create_table_sql(self.table))
                    columns = sqlite_columns(conn, self.table)
                if columns and not sqlite_unique_event_id(conn, self.table):
                    raise no_unique_key(self.table)
                self._fitter = Fitter.build(self.table, columns, declared("sqlite", create_table_sql(self.table)))
                if self._on_connect is not None:
                    self._on_connect(conn)
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                raise SinkError(f"sqlite error: {exc} ({self.path})", transient=_is_transient(exc)) from None
            except SinkError:
                if conn is not None:
                    conn.close()
                raise
            self._conn = conn
        return self._conn

    def check(self) -> None:
        conn = self._connection()
        try:
            conn.execute(insert_check_sql(self.table, '"'))
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite error: {exc} ({self.path})", transient=_is_transient(exc)) from None

    def write(self, rows: Sequence[Row], meanwhile: Callable[[], None] | None = None) -> None:
        if not rows:
            return
        conn = self._connection()
        fitter, coerced = self._fitter, 0
        if fitter is not None:
            fitted = [fitter.fit(row) for row in rows]
            coerced = sum(1 for f in fitted if f is not None)
            rows = [row if f is None else f for row, f in zip(rows, fitted, strict=True)]
        params = [(*row[:10], iso_utc(row[10])) for row in rows]
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(self._sql, params)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite error: {exc} ({self.path})", transient=_is_transient(exc)) from None
        self.statements += 1
        self.coerced += coerced

    def cluster(self) -> str | None:
        return None  # one file: nothing to tell apart

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def abandon(self) -> None:
        """Forget the connection in a forked child; the parent still owns it."""
        self._conn = None


def _is_transient(exc: sqlite3.Error) -> bool:
    """Only errors caused by a row's content are permanent; a locked, missing or full database is not."""
    return not isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError,
                                sqlite3.InterfaceError))
