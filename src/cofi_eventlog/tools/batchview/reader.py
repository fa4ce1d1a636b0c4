"""A read-only connection for the report and the dashboard: SELECT statements and nothing else.

SQLite is opened with ``mode=ro``, so the engine itself refuses a write; every statement, on either
dialect, must begin with SELECT or WITH, or it is refused before it is sent. The few places where the
two dialects differ (time arithmetic, JSON, index hints) are answered here, so the queries elsewhere
are written once.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import zlib
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import pymysql

from ...database import Connection
from ...sinks import SinkError, mysql_connect
from ...sinks.dsn import Dsn

_READ = re.compile(r"[\s(]*(SELECT|WITH)\b", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"%([s%])")


class Reader(Connection):
    """Reads only. ``sql`` uses ``%s`` placeholders; names go through :meth:`name`."""

    def __init__(self, dsn: str | Dsn, *, timeout: float = 30.0) -> None:
        super().__init__(dsn)
        self._hints: dict[str, tuple[str, str | None]] = {}
        if self.dialect == "mysql":
            self.conn = mysql_connect.connect(self.dsn, timeout=timeout, autocommit=True)
            return
        if not os.path.exists(self.dsn.path):
            raise SinkError(f"no database at {self.dsn.path}", transient=False)
        try:
            self.conn = sqlite3.connect(f"file:{quote(os.path.abspath(self.dsn.path))}?mode=ro", uri=True,
                                        timeout=timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite error: {exc} ({self.dsn.path})", transient=False) from None

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if not _READ.match(sql):
            raise ValueError(f"the batch view reads only; refused: {sql[:40]!r}")
        if self.dialect == "sqlite":
            sql = _PLACEHOLDER.sub(lambda m: "?" if m.group(1) == "s" else "%", sql)
        cur = self.conn.cursor()
        try:
            cur.execute(sql, tuple(params))
            return list(cur.fetchall())
        except sqlite3.Error as exc:
            raise SinkError(f"sqlite error: {exc} ({self.dsn.path})", transient=True) from None
        except pymysql.MySQLError as exc:
            raise mysql_connect.classify(exc, self.dsn) from None
        finally:
            cur.close()

    def slot_start(self, column: str, seconds: int) -> str:
        """SQL for the start of the ``seconds``-wide slot holding a createdAt, in seconds since 1970 (UTC)."""
        width = int(seconds)
        if self.dialect == "mysql":  # TO_SECONDS counts from year 0 and ignores the session's time zone
            return f"(TO_SECONDS({column}) DIV {width} * {width} - 62167219200)"
        return f"(CAST(strftime('%%s', {column}) AS INTEGER) / {width} * {width})"

    def file_key(self, names: Sequence[str]) -> tuple[str, list[str], Callable[[str], str]]:
        """SQL giving a key for the rows of the files named (NULL for the others), its parameters, and
        the key of a name.

        On MySQL the key is MD5(fileName), computed only where CRC32 matches: a 1024-character group key
        would push the GROUP BY into an on-disk temporary table."""
        if not names:
            return "NULL", [], str
        if self.dialect == "mysql":
            crcs = ", ".join(sorted({str(zlib.crc32(n.encode("utf-8"))) for n in names}))
            return (f"CASE WHEN CRC32(fileName) IN ({crcs}) THEN MD5(fileName) END", [],
                    lambda name: hashlib.md5(name.encode("utf-8")).hexdigest())
        return f"CASE WHEN fileName IN ({', '.join(['%s'] * len(names))}) THEN fileName END", list(names), str

    def json_text(self, column: str, key: str) -> str:
        """SQL for a top-level string of a JSON column, NULL when absent or the text is not JSON."""
        if not key.isidentifier():
            raise ValueError(f"not a plain JSON key: {key!r}")
        if self.dialect == "mysql":
            return f"JSON_UNQUOTE(JSON_EXTRACT({column}, '$.{key}'))"
        return f"CASE WHEN json_valid({column}) THEN json_extract({column}, '$.{key}') END"

    def index_hints(self, table: str) -> tuple[str, str | None]:
        """MySQL index hints for reading one batch: (through its (batchId, createdAt) index, through the
        primary key when that is eventId, else None). SQLite's planner needs none: ('', None).

        MariaDB's optimizer prefers a full scan once a batch holds a tenth of the table, and the batch index
        to a key range; the hints keep it to the batch's rows. Index names are looked up, as a table that
        init-db upgraded may name them otherwise."""
        if self.dialect != "mysql":
            return "", None
        if table not in self._hints:
            rows = self.fetchall("SELECT index_name, column_name FROM information_schema.statistics "
                                 "WHERE table_schema = DATABASE() AND table_name = %s "
                                 "ORDER BY index_name, seq_in_index", (table,))
            columns: dict[str, list[str]] = {}
            for index, column in rows:
                columns.setdefault(str(index), []).append(str(column).lower())
            found = [n for n, cols in columns.items() if cols[:2] == ["batchid", "createdat"]]
            batch = f"FORCE INDEX ({self.name(found[0])})" if found else ""
            key = "FORCE INDEX (PRIMARY)" if columns.get("PRIMARY") == ["eventid"] else None
            self._hints[table] = (batch, key)
        return self._hints[table]
