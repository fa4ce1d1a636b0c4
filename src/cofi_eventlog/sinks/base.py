"""What every sink shares: the row shape, the column names, the protocol and its error."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol, overload

# A row as the writer hands it to a sink. Text is already bounded and free of lone surrogates, and
# metadata is JSON text, so sinks only quote and send.
#   (eventId, batchId, stage, eventType, fileName, message, gpuIp, processed, total, metadata, createdAt_us)
Row = tuple[bytes, str, "str | None", str, "str | None", "str | None", "str | None", "int | None",
            "int | None", "str | None", int]

class RowBatch(Sequence[Row]):
    """Rows kept as their columns; the row tuples are made only when something looks at a row (isolating a
    bad one, spooling, SQLite). The MySQL sink renders a column at a time and never needs them, and a
    busy writer so makes no container per event for the garbage collector to scan."""

    def __init__(self, columns: Sequence[Sequence[Any]]) -> None:
        self.columns = columns
        self._rows: list[Row] | None = None

    def __len__(self) -> int:
        return len(self.columns[0])

    @overload
    def __getitem__(self, index: int) -> Row: ...

    @overload
    def __getitem__(self, index: slice) -> list[Row]: ...

    def __getitem__(self, index: int | slice) -> Row | list[Row]:
        return self.rows()[index]

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows())

    def rows(self) -> list[Row]:
        if self._rows is None:
            self._rows = list(zip(*self.columns, strict=True))
        return self._rows

    def part(self, start: int, stop: int) -> RowBatch:
        return RowBatch([column[start:stop] for column in self.columns])


COLUMNS: tuple[str, ...] = (
    "eventId", "batchId", "stage", "eventType", "fileName", "message",
    "gpuIp", "processed", "total", "metadata", "createdAt",
)

EVENT_TYPES: tuple[str, ...] = (
    "error", "progress", "file_start", "file_complete",
    "stage_start", "stage_complete", "batch_start", "batch_complete",
)


class SinkError(Exception):
    """A write failed. ``transient`` says whether the same rows may succeed later."""

    def __init__(self, message: str, *, transient: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code


# SinkError.code of a table without a unique key on eventId (not a server's errno).
KEY_MISSING = -1062


def no_unique_key(table: str) -> SinkError:
    """The error of a table without a unique key on eventId. A retried write (after a lost answer, or a
    replay of the spool) would store its rows twice there, so nothing is written until ``init-db`` adds
    the key; the error is transient, and the events wait in the spool meanwhile."""
    return SinkError(f"{table} has no PRIMARY or UNIQUE key on eventId alone, so a retried write could store an "
                     f"event twice; nothing is written to it until `cofi-eventlog init-db` adds the key "
                     f"(with --dedupe if it already holds duplicates). The events wait in the spool.",
                     transient=True, code=KEY_MISSING)


class Sink(Protocol):
    """Takes rows and makes them durable; knows nothing of queues or threads."""

    statements: int  # INSERT statements sent so far
    coerced: int  # rows written with a value cut or clamped to fit a column narrower than the library's

    def write(self, rows: Sequence[Row], meanwhile: Callable[[], None] | None = None) -> None:
        """Write every row or raise SinkError; rows already present are ignored. A sink that waits for the
        server may call ``meanwhile`` once while it does (the writer prepares its next batch then)."""

    def check(self) -> None:
        """Connect and make sure rows can be inserted (the table, its columns, the right to insert);
        raise SinkError saying what is wrong. Writes nothing."""

    def cluster(self) -> str | None:
        """Which cluster (or lone server) the rows go to, connecting if need be (SinkError when it cannot);
        None where that has no meaning (SQLite). A journal is written only into the cluster it was first
        written to."""

    def close(self) -> None: ...

    def abandon(self) -> None:
        """Forget the connection without closing it: a forked child shares it with its parent."""


def iso_utc(micros: int) -> str:
    """createdAt as text both dialects take: 'YYYY-MM-DD HH:MM:SS.ffffff', UTC."""
    second, frac = divmod(micros, 1_000_000)
    return datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + f".{frac:06d}"


def insert_check_sql(table: str, quote: str) -> str:
    """An INSERT that adds no row, yet needs the table, every column and the right to insert."""
    columns = ",".join(f"{quote}{c}{quote}" for c in COLUMNS)
    name = f"{quote}{table}{quote}"
    return f"INSERT INTO {name} ({columns}) SELECT {columns} FROM {name} WHERE 1 = 0"


def skip_duplicates(dialect: str) -> str:
    """The clause after VALUES that skips a row whose eventId is already stored, and nothing else.

    ``INSERT IGNORE`` (and SQLite's ``OR IGNORE``) would also turn a failed CHECK or an overlong value
    into a warning: in a multi-row statement, a row lost or cut in silence.
    """
    if dialect == "mysql":
        return " ON DUPLICATE KEY UPDATE `eventId` = `eventId`"
    return " ON CONFLICT(eventId) DO NOTHING"


def is_identifier(name: str) -> bool:
    """Table names are interpolated into SQL, so only plain identifiers pass."""
    return bool(name) and len(name) <= 64 and name.isascii() and (name.replace("_", "a").isalnum()) \
        and not name[0].isdigit()
