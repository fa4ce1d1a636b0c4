"""MySQL/MariaDB sink: multi-row INSERTs that skip duplicate eventIds, built here, sent with pymysql.

pymysql's ``executemany`` escapes every value through its generic encoder (about 12 µs a row). Our rows
have a fixed shape, so the statement is built directly with the same escaping rules as the driver,
including the server's NO_BACKSLASH_ESCAPES mode, which is read from the connection's status flags
before every statement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import pymysql

from .base import COLUMNS, Row, SinkError, insert_check_sql, skip_duplicates
from .dsn import Dsn

# Errors caused by a row's content: no retry will help, so the writer isolates and dead-letters the row.
# 4025 MariaDB JSON/CHECK constraint, 3819 MySQL CHECK, 3140 MySQL invalid JSON, 1366 bad string value,
# 1406 data too long, 1264 out of range, 1048 NULL in NOT NULL, 1292 bad datetime, 1153 packet too large.
ROW_ERRNOS = frozenset({1048, 1153, 1264, 1292, 1366, 1406, 3140, 3819, 4025})
# Everything else is transient: the documented ones (2002, 2003, 2006, 2013, 2055, 1040, 1053, 1205, 1213,
# 1290) and also configuration faults such as a wrong password (1045) or a missing table (1146), which a
# person can fix. Their rows are spooled and retried, never dead-lettered for a fault that is not theirs.
# After 2006/2013 the connection is dead and is replaced, never pinged.
NO_BACKSLASH_ESCAPES = 512  # pymysql.constants.SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES

_ESCAPES = {0: "\\0", ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", 26: "\\Z",
            ord('"'): '\\"', ord("'"): "\\'"}


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


def connect(dsn: Dsn, *, timeout: float = 10.0, autocommit: bool = True) -> Any:
    """A pymysql connection in utf8mb4 with every socket operation bounded by ``timeout``."""
    try:
        return pymysql.connect(
            host=dsn.host, port=dsn.port, user=dsn.user, password=dsn.password, database=dsn.database,
            charset="utf8mb4", autocommit=autocommit, connect_timeout=timeout,
            read_timeout=timeout, write_timeout=timeout,
        )
    except pymysql.MySQLError as exc:
        raise classify(exc, dsn) from None


def classify(exc: BaseException, dsn: Dsn | None = None) -> SinkError:
    """Turn a driver error into a SinkError by errno; the message never carries the password."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    where = f" ({dsn.redacted()})" if dsn else ""
    text = str(exc.args[1]) if len(exc.args) > 1 else type(exc).__name__
    if dsn is not None and dsn.password:
        text = text.replace(dsn.password, "***")
    return SinkError(f"mysql error {code}: {text}{where}", transient=code not in ROW_ERRNOS, code=code)


class _Quoter:
    """Renders one row as a VALUES tuple, escaping strings exactly as the driver would."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def timestamp(self, micros: int) -> str:
        second, frac = divmod(micros, 1_000_000)
        if second != self._second:  # rows come in bursts from the same second
            self._second = second
            self._prefix = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        return f"'{self._prefix}.{frac:06d}'"

    def render(self, row: Row, no_backslash: bool) -> str:
        eid, batch, stage, etype, fname, msg, gpu, processed, total, meta, created = row
        if no_backslash:
            def q(s: str | None) -> str:
                return "NULL" if s is None else "'" + s.replace("'", "''") + "'"
        else:
            def q(s: str | None) -> str:
                return "NULL" if s is None else "'" + s.translate(_ESCAPES) + "'"
        return (
            f"(x'{eid.hex()}',{q(batch)},{q(stage)},{q(etype)},{q(fname)},{q(msg)},{q(gpu)},"
            f"{'NULL' if processed is None else int(processed)},{'NULL' if total is None else int(total)},"
            f"{q(meta)},{self.timestamp(created)})"
        )


class MySQLSink:
    """Writes rows in statements capped by bytes, so each fits the server's max_allowed_packet."""

    def __init__(self, dsn: Dsn, table: str, *, create_table: bool = True, timeout: float = 10.0,
                 max_statement_bytes: int = 4 << 20, on_connect: Callable[[Any], None] | None = None) -> None:
        self.dsn = dsn
        self._on_connect = on_connect
        self.table = table
        self.statements = 0
        self._create = create_table
        self._timeout = timeout
        self._max_bytes = max_statement_bytes
        self._conn: Any = None
        self._quoter = _Quoter()
        self._head = f"INSERT INTO `{table}` ({','.join(f'`{c}`' for c in COLUMNS)}) VALUES ".encode()
        self._tail = skip_duplicates("mysql").encode()

    def __repr__(self) -> str:
        return f"MySQLSink({self.dsn.redacted()!r}, table={self.table!r})"

    def _connection(self) -> Any:
        if self._conn is None:
            conn = connect(self.dsn, timeout=self._timeout)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT @@max_allowed_packet")
                    packet = int(cur.fetchone()[0])
                    if self._create:
                        cur.execute(create_table_sql(self.table))
                if self._on_connect is not None:
                    self._on_connect(conn)
            except pymysql.MySQLError as exc:
                conn.close()
                raise classify(exc, self.dsn) from None
            self._max_bytes = min(self._max_bytes, packet - 1024)
            self._conn = conn
        return self._conn

    def statements_for(self, rows: Sequence[Row]) -> list[bytes]:
        """Split rows into INSERT statements of at most max_statement_bytes each."""
        conn = self._connection()
        no_backslash = bool(conn.server_status & NO_BACKSLASH_ESCAPES)
        head, tail = self._head, self._tail
        empty = len(head) + len(tail)
        out: list[bytes] = []
        parts: list[bytes] = []
        size = empty
        for row in rows:
            value = self._quoter.render(row, no_backslash).encode("utf-8")
            if empty + len(value) > self._max_bytes:
                raise SinkError(f"row {row[0].hex()} is {len(value)} bytes, over the statement cap "
                                f"{self._max_bytes}", transient=False, code=1153)
            if parts and size + len(value) + 1 > self._max_bytes:
                out.append(head + b",".join(parts) + tail)
                parts, size = [], empty
            parts.append(value)
            size += len(value) + 1
        if parts:
            out.append(head + b",".join(parts) + tail)
        return out

    def check(self) -> None:
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                cur.execute(insert_check_sql(self.table, "`"))
        except pymysql.MySQLError as exc:
            self._drop()
            raise classify(exc, self.dsn) from None

    def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        try:
            statements = self.statements_for(rows)
            for sql in statements:
                self._conn.query(sql)
                self.statements += 1
        except pymysql.MySQLError as exc:
            error = classify(exc, self.dsn)
            if error.transient:
                self._drop()
            raise error from None
        except OSError as exc:  # a socket failure pymysql did not wrap
            self._drop()
            raise SinkError(f"mysql connection failed: {exc}", transient=True) from None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # the connection is already broken; closing is a courtesy
                pass

    def close(self) -> None:
        self._drop()

    def abandon(self) -> None:
        """Forget the connection without touching its socket (a forked child shares it with the parent)."""
        self._conn = None
