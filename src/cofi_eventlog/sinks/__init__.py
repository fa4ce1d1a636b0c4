"""Sinks write rows to a database. They know nothing of the queue or the writer thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import COLUMNS, EVENT_TYPES, Row, Sink, SinkError, is_identifier, iso_utc
from .dsn import Dsn, parse_dsn
from .mysql import MySQLSink
from .sqlite import SQLiteSink


def open_sink(dsn: Dsn, table: str, *, create_table: bool = True, timeout: float = 10.0,
              on_connect: Callable[[Any], None] | None = None, rows_per_statement: int = 1000) -> Sink:
    """The sink for a DSN; it connects lazily, on its first write, and hands each new DB-API
    connection to ``on_connect``."""
    if dsn.dialect == "sqlite":
        return SQLiteSink(dsn.path, table, create_table=create_table, timeout=timeout, on_connect=on_connect)
    return MySQLSink(dsn, table, create_table=create_table, timeout=timeout, on_connect=on_connect,
                     rows_per_statement=rows_per_statement)


__all__ = ["COLUMNS", "EVENT_TYPES", "Dsn", "MySQLSink", "Row", "SQLiteSink", "Sink", "SinkError",
           "is_identifier", "iso_utc", "open_sink", "parse_dsn"]
