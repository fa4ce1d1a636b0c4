"""MySQL/MariaDB sink: multi-row INSERTs that skip duplicate eventIds, built here, sent with pymysql.

pymysql's ``executemany`` escapes every value through its generic encoder (about 12 µs a row). Our rows
have a fixed shape, so the statement is built directly with the same escaping rules as the driver,
including the server's NO_BACKSLASH_ESCAPES mode, which is read from the connection's status flags
before every statement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pymysql
from pymysql.constants import COMMAND

from .base import Row, RowBatch, SinkError, insert_check_sql, no_unique_key, skip_duplicates
from .columns import declared, mysql_columns, mysql_unique_event_id
from .dsn import Dsn
from .fit import Fitter
from .mysql_connect import SAME_HOST_ERRNOS, WRITE_SET_ERRNOS, Link, classify, open_link
from .mysql_values import ALL_COLUMNS, Renderer

NO_BACKSLASH_ESCAPES = 512  # pymysql.constants.SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES
RETURN_AFTER = 60.0  # seconds on a later host of the DSN before the first one is tried again


def create_table_sql(table: str) -> str:
    """DDL for MySQL/MariaDB. eventId is the primary key: see docs/design.md, "Why eventId is the primary key"."""
    return f"""CREATE TABLE IF NOT EXISTS `{table}` (
  `eventId` BINARY(16) NOT NULL,
  `batchId` VARCHAR(128) NOT NULL,
  `stage` VARCHAR(64) NULL,
  `eventType` VARCHAR(32) NOT NULL,
  `fileName` VARCHAR(1024) NULL,
  `message` MEDIUMTEXT NULL,
  `gpuIp` VARCHAR(64) NULL,
  `processed` BIGINT NULL,
  `total` BIGINT NULL,
  `metadata` JSON NULL,
  `createdAt` DATETIME(6) NOT NULL,
  PRIMARY KEY (`eventId`),
  KEY `idx_batch_type_time` (`batchId`, `eventType`, `createdAt`),
  KEY `idx_batch_time` (`batchId`, `createdAt`),
  KEY `idx_time_type` (`createdAt`, `eventType`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"""


class MySQLSink:
    """Writes rows in statements that fit the server: under max_allowed_packet (a row over it is refused)
    and, on a Galera node, under wsrep_max_ws_rows and a third of wsrep_max_ws_size (a statement's write set
    measured 1.7 to 2 times its text). Values are bounded to the columns the table really has (see fit.py).

    With several hosts in the DSN the sink writes to one; when it fails, the next connection goes to the
    next host, and after ``return_after`` seconds on a later host the first one is tried again. A host is
    taken only when it can be written to and belongs to the cluster the sink first wrote to (see
    mysql_connect): never half a batch on one server and half on another.
    """

    def __init__(self, dsn: Dsn, table: str, *, create_table: bool = True, timeout: float = 10.0,
                 max_statement_bytes: int = 4 << 20, on_connect: Callable[[Any], None] | None = None,
                 return_after: float = RETURN_AFTER, rows_per_statement: int = 1000) -> None:
        self.dsn = dsn
        self._on_connect = on_connect
        self.table = table
        self.statements = 0
        self.coerced = 0  # rows cut or clamped to fit a column narrower than the library's
        self._create = create_table
        self._timeout = timeout
        self._return_after = return_after
        self._wanted = declared("mysql", create_table_sql(table))
        self._max_bytes = max_statement_bytes
        self._rows_per_statement = rows_per_statement
        self._packet_bytes = max_statement_bytes
        self._write_set: tuple[int | None, int | None] = (None, None)  # (rows, bytes) a statement may carry
        self._learned: tuple[int | None, int | None] = (None, None)  # the same, halved after a refusal
        self._host = 0
        self._cluster: str | None = None  # the cluster of the host first written to
        self._reached: str | None = None  # the cluster of the connection in use
        self._away_since: float | None = None
        self._fitter: Fitter | None = None
        self._conn: Any = None
        self._render = Renderer()
        self._into = f"INSERT INTO `{table}` ("
        self._tail = skip_duplicates("mysql").encode()

    def __repr__(self) -> str:
        return f"MySQLSink({self.dsn.redacted()!r}, table={self.table!r})"

    @property
    def host(self) -> str:
        """The host:port the sink writes to (or will try next)."""
        host, port = self.dsn.hosts[self._host]
        return f"{host}:{port}"

    def _connection(self) -> Any:
        if self._conn is None:
            several = len(self.dsn.hosts) > 1
            link = open_link(self.dsn, timeout=self._timeout, first=self._host, writable=several,
                             cluster=self._cluster if several else None)
            conn = link.conn
            try:
                with conn.cursor() as cur:
                    columns = mysql_columns(cur, self.table)
                    if not columns and self._create:  # DDL only when needed: Galera replicates it cluster-wide
                        cur.execute(create_table_sql(self.table))
                        columns = mysql_columns(cur, self.table)
                    if columns and not mysql_unique_event_id(cur, self.table):
                        raise no_unique_key(self.table)
                fitter = Fitter.build(self.table, columns, self._wanted)
                if self._on_connect is not None:
                    self._on_connect(conn)
            except pymysql.MySQLError as exc:
                conn.close()
                raise classify(exc, self.dsn) from None
            except SinkError:
                conn.close()
                raise
            self._fitter = fitter
            self._size_statements(link)
            if link.host != self._host or self._away_since is None:
                self._away_since = time.monotonic() if link.host else None
            self._host = link.host
            self._reached = link.cluster
            self._conn = conn
        return self._conn

    def _size_statements(self, link: Link) -> None:
        settings = link.settings
        self._packet_bytes = min(self._max_bytes, int(settings.get("max_allowed_packet", 1 << 24)) - 1024)
        rows = size = None
        if settings.get("wsrep_on") == "ON":
            rows = int(settings.get("wsrep_max_ws_rows", 0)) or None
            size = int(settings.get("wsrep_max_ws_size", 0)) // 3 or None
        self._write_set = (rows, size)

    def _caps(self) -> tuple[int, int]:
        """(rows, bytes) one statement may carry."""
        rows = [n for n in (self._write_set[0], self._learned[0]) if n]
        size = [n for n in (self._packet_bytes, self._write_set[1], self._learned[1]) if n]
        return (min(rows) if rows else 1 << 62), min(size)

    def statements_for(self, rows: Sequence[Row]) -> list[bytes]:
        """Split rows into INSERT statements that each fit the server's limits."""
        self._connection()
        return [sql for sql, _ in self._statements(self._fitted(rows)[0])]

    def _fitted(self, rows: Sequence[Row]) -> tuple[Sequence[Row], int]:
        """The rows bounded to narrower columns (see fit.py), and how many were."""
        if self._fitter is None:
            return rows, 0
        fitted = [self._fitter.fit(row) for row in rows]
        coerced = len(fitted) - fitted.count(None)
        if not coerced:
            return rows, 0
        return [row if f is None else f for row, f in zip(rows, fitted, strict=True)], coerced

    def _statements(self, rows: Sequence[Row]) -> Iterator[tuple[bytes, int]]:
        """The statements for rows (each with its row count), made one at a time: the next is built while
        the server runs the one before (see :meth:`write`)."""
        no_backslash = bool(self._connection().server_status & NO_BACKSLASH_ESCAPES)
        tail = self._tail
        max_rows, max_bytes = self._caps()
        step = min(max_rows, self._rows_per_statement)
        for start in range(0, len(rows), step):
            chunk = rows
            if len(rows) > step:
                chunk = rows.part(start, start + step) if isinstance(rows, RowBatch) else rows[start:start + step]
            names, values = self._render.batch(chunk, no_backslash)
            sql = f"{self._into}{names}) VALUES {values}".encode() + tail
            if len(sql) <= max_bytes:
                yield sql, len(chunk)
            else:  # rows too big to go together: as many as fit in each statement
                yield from self._split(chunk, no_backslash, max_bytes)

    def _split(self, rows: Sequence[Row], no_backslash: bool, max_bytes: int) -> Iterator[tuple[bytes, int]]:
        head = f"{self._into}{ALL_COLUMNS}) VALUES ".encode()
        tail = self._tail
        empty = len(head) + len(tail)
        parts: list[bytes] = []
        size = empty
        for row in rows:
            value = self._render.row(row, no_backslash).encode("utf-8")
            if empty + len(value) > self._packet_bytes:
                raise SinkError(f"row {row[0].hex()} is {len(value)} bytes, over the statement cap "
                                f"{self._packet_bytes}", transient=False, code=1153)
            if parts and size + len(value) + 1 > max_bytes:
                yield head + b",".join(parts) + tail, len(parts)
                parts, size = [], empty
            parts.append(value)
            size += len(value) + 1
        if parts:
            yield head + b",".join(parts) + tail, len(parts)

    def check(self) -> None:
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                cur.execute(insert_check_sql(self.table, "`"))
        except pymysql.MySQLError as exc:
            self._drop()
            raise classify(exc, self.dsn) from None

    def write(self, rows: Sequence[Row], meanwhile: Callable[[], None] | None = None) -> None:
        """Write the rows, a statement at a time, each sent before the next is built: the server runs one
        while Python builds the next (pymysql's query(), split in its send and its read). ``meanwhile``
        runs while the server runs the last one."""
        if not rows:
            return
        if self._away_since is not None and time.monotonic() - self._away_since > self._return_after:
            self._drop()  # back to the first host, if it answers again
            self._host, self._away_since = 0, None
        pending: tuple[bytes, int] | None = None
        try:
            conn = self._connection()
            rows, coerced = self._fitted(rows)
            for statement in self._statements(rows):
                if pending is not None:
                    self._finish(conn)
                conn._execute_command(COMMAND.COM_QUERY, statement[0])
                pending = statement
            if pending is not None:
                if meanwhile is not None:
                    meanwhile()
                self._finish(conn)
        except pymysql.MySQLError as exc:
            error = classify(exc, self.dsn, self.host if len(self.dsn.hosts) > 1 else None)
            if error.code in WRITE_SET_ERRNOS and pending is not None:  # remembered: the next batches fit at once
                sql, count = pending
                rows_cap, bytes_cap = self._learned
                self._learned = (max(1, count // 2), bytes_cap) if error.code == 1180 else \
                    (rows_cap, max(1, len(sql) // 2))
            if error.transient:
                self._drop()
                if error.code not in SAME_HOST_ERRNOS:
                    self._next_host()
            raise error from None
        except OSError as exc:  # a socket failure pymysql did not wrap
            self._drop()
            self._next_host()
            raise SinkError(f"mysql connection failed: {exc}", transient=True) from None
        self.coerced += coerced
        if self._cluster is None:
            self._cluster = self._reached

    def _finish(self, conn: Any) -> None:
        """Read the result of the statement sent last."""
        conn._affected_rows = conn._read_query_result()
        self.statements += 1

    def _next_host(self) -> None:
        self._host = (self._host + 1) % len(self.dsn.hosts)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # the connection is already broken; closing is a courtesy
                pass

    def cluster(self) -> str | None:
        try:
            self._connection()
        except pymysql.MySQLError as exc:
            self._drop()
            raise classify(exc, self.dsn) from None
        return self._cluster or self._reached

    def close(self) -> None:
        self._drop()

    def abandon(self) -> None:
        """Forget the connection without touching its socket (a forked child shares it with the parent)."""
        self._conn = None
