"""Counting writes the way the database saw them, not the way the client meant them.

MySQL/MariaDB keeps per-connection counters (``SHOW SESSION STATUS``: ``Com_insert`` statements,
``Handler_write`` rows); they are read on each connection just before it closes, so they are this
run's alone even on a server others write to. The server-wide ``SHOW GLOBAL STATUS`` deltas are taken
around the run as well; they include every other session writing meanwhile.

SQLite has no such counters: a trace callback sees each statement the connection runs, and
``total_changes`` counts the rows. SQLite steps a prepared INSERT once per row, even under
``executemany``, so there the figure that drops is transactions (commits), counted from the trace too.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from typing import Any

from ...database import Database

COUNTERS = ("Com_insert", "Handler_write")
_STATUS_SQL = "SHOW {} STATUS WHERE Variable_name IN ('Com_insert', 'Handler_write')"


@dataclass
class Tally:
    """What some connections did, as the database counted it."""

    statements: int = 0  # INSERT statements (SQLite: INSERT executions, one per row)
    rows: int = 0  # rows written
    transactions: int = 0  # SQLite only: commits, explicit or implicit
    unread: int = 0  # connections whose counters could not be read (a broken connection)

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def server_status(db: Database) -> dict[str, int]:
    """The server-wide counters, for a delta around a run."""
    return {name: int(value) for name, value in db.fetchall(_STATUS_SQL.format("GLOBAL"))}


class MySQLCounter:
    """Reads each connection's own counters as it closes; pass :meth:`attach` as ``on_connect``."""

    def __init__(self) -> None:
        self.tally = Tally()

    def attach(self, conn: Any) -> None:
        close = conn.close

        def close_after_counting() -> None:
            conn.close = close  # once only, whoever closes
            self._read(conn)
            close()

        conn.close = close_after_counting

    def _read(self, conn: Any) -> None:
        try:
            with conn.cursor() as cur:
                cur.execute(_STATUS_SQL.format("SESSION"))
                status = {name: int(value) for name, value in cur.fetchall()}
        except Exception:  # a connection dropped after a network error can no longer answer
            self.tally.unread += 1
            return
        self.tally.statements += status["Com_insert"]
        self.tally.rows += status["Handler_write"]

    def before_close(self) -> None:
        """Nothing to do: the counters are read when each connection closes."""


class SQLiteCounter:
    """Traces each connection it is given. Rows are read at each COMMIT (the library's SQLite sink writes
    each batch in a transaction), so a connection that closes later, in another process's stead (the
    host's shared writer taking over at the end of a run), is counted too; and at :meth:`before_close`."""

    def __init__(self) -> None:
        self._counts = Tally()
        self._rows: list[int] = []  # total_changes of each connection, as last read
        self._connections: list[sqlite3.Connection] = []

    @property
    def tally(self) -> Tally:
        return Tally(self._counts.statements, sum(self._rows), self._counts.transactions, self._counts.unread)

    def attach(self, conn: sqlite3.Connection) -> None:
        self._connections.append(conn)
        index = len(self._rows)
        self._rows.append(0)
        in_transaction = False

        def trace(sql: str) -> None:
            nonlocal in_transaction
            word = sql.lstrip()[:8].upper()
            if word.startswith("INSERT"):
                self._counts.statements += 1
                if not in_transaction:
                    self._counts.transactions += 1
            elif word.startswith("BEGIN"):
                in_transaction = True
            elif word.startswith(("COMMIT", "END")):
                in_transaction = False
                self._counts.transactions += 1
                self._rows[index] = conn.total_changes  # the transaction's rows are in it by now
            elif word.startswith("ROLLBACK"):
                in_transaction = False

        conn.set_trace_callback(trace)

    def before_close(self) -> None:
        """Read the row counts of the traced connections still open."""
        for index, conn in enumerate(self._connections):
            try:
                self._rows[index] = conn.total_changes
            except sqlite3.ProgrammingError:  # closed already
                pass


Counter = MySQLCounter | SQLiteCounter


def counter_for(dialect: str) -> Counter:
    return MySQLCounter() if dialect == "mysql" else SQLiteCounter()
