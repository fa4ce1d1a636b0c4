"""The VALUES text of a multi-row INSERT.

A batch is rendered a column at a time. Its columns are listed in the INSERT in the order that makes a
row cheapest to write: the quoted values first, so that one ``"','".join`` writes most of a row; then the
values that are quoted on some rows and NULL on others, and the counts, ready-made; then the columns that
are NULL on every row of the batch, which are constants. The rows are then joined in C, with the end of
one row and the start of the next as the separator. Text with none of the characters that quoting must
change (backslash, quote, NUL, CR, LF, ^Z) goes between quotes as it is; a row holding any is rendered
alone, escaped exactly as the driver would (or, under NO_BACKSLASH_ESCAPES, by doubling its quotes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

from .base import COLUMNS, Row, RowBatch

UNSAFE = re.compile("[\\\\'\x00\n\r\x1a]")  # what quoting must change, in either mode (a double quote need not)
_ESCAPES = {0: "\\0", ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", 26: "\\Z",
            ord('"'): '\\"', ord("'"): "\\'"}
_ALWAYS = (1, 3)  # batchId, eventType: text that is never NULL (eventId and createdAt are rendered apart)
_NULLABLE = (2, 4, 5, 6, 9)  # stage, fileName, message, gpuIp, metadata
_COUNTS = (7, 8)  # processed, total
_COUNT_TYPES = {int, type(None)}
_NULL = {None: "NULL"}  # .get(value, rendered): "NULL" for None, the rendered value otherwise
_SECONDS = itemgetter(slice(None, -6))  # of str(createdAt in µs): the seconds, and the fraction's 6 digits
_FRACTION = itemgetter(slice(-6, None))
ALL_COLUMNS = ",".join(f"`{c}`" for c in COLUMNS)


class Renderer:
    def __init__(self) -> None:
        self._seconds: dict[str, str] = {}  # seconds since 1970 -> "YYYY-MM-DD HH:MM:SS."

    def batch(self, rows: Sequence[Row], no_backslash: bool) -> tuple[str, str]:
        """(the column list, the VALUES text) of every row."""
        columns = rows.columns if isinstance(rows, RowBatch) else list(zip(*rows, strict=True))
        careful: set[int] = set()
        if not set(map(type, chain(columns[7], columns[8]))) <= _COUNT_TYPES or min(columns[10]) < 1_000_000:
            careful.update(range(len(rows)))  # rows read back from a file someone edited, or dated 1970
        elif _has_unsafe("".join(filter(None, chain.from_iterable(columns[k] for k in (*_ALWAYS, *_NULLABLE))))):
            for k in (*_ALWAYS, *_NULLABLE):
                careful.update(i for i, text in enumerate(columns[k]) if text is not None and UNSAFE.search(text))
        if not careful:
            return self._columns(columns)
        if len(careful) == len(rows):
            return ALL_COLUMNS, ",".join(self.row(row, no_backslash) for row in rows)
        plain = [row for i, row in enumerate(rows) if i not in careful]
        names, text = self._columns(list(zip(*plain, strict=True)))
        order = [COLUMNS.index(name.strip("`")) for name in names.split(",")]
        escaped = [self.row(rows[i], no_backslash, order) for i in sorted(careful)]
        return names, ",".join([text, *escaped])

    def row(self, row: Row, no_backslash: bool, order: Sequence[int] = range(len(COLUMNS))) -> str:
        """One row's VALUES tuple, its text escaped, its columns in ``order`` (that of ALL_COLUMNS by default)."""
        q = _doubled if no_backslash else _backslashed
        second, fraction = divmod(int(row[10]), 1_000_000)
        values = [f"x'{row[0].hex()}'", *(q(v) for v in row[1:7]), _count(row[7]), _count(row[8]), q(row[9]),
                  f"'{self._second(str(second))}{fraction:06d}'"]
        return "(" + ",".join(values[k] for k in order) + ")"

    def _second(self, seconds: str) -> str:
        text = self._seconds.get(seconds)
        if text is None:
            if len(self._seconds) > 4096:
                self._seconds.clear()
            text = datetime.fromtimestamp(int(seconds), timezone.utc).strftime("%Y-%m-%d %H:%M:%S.")
            self._seconds[seconds] = text
        return text

    def _columns(self, columns: Sequence[Sequence[Any]]) -> tuple[str, str]:
        """Rows whose text needs no escaping and whose counts are ints."""
        stamps = list(map(str, columns[10]))
        seconds = list(map(_SECONDS, stamps))
        second_texts = {second: self._second(second) for second in set(seconds)}
        quoted = [0, *_ALWAYS, 10]  # eventId goes in x'...', the others in '...'
        values: list[Any] = [map(bytes.hex, columns[0]), columns[1], columns[3],
                             map(str.__add__, map(second_texts.__getitem__, seconds), map(_FRACTION, stamps))]
        ready: list[int] = []  # rendered one by one: 'text' or NULL, digits or NULL
        tokens: list[Any] = []
        nulls: list[int] = []
        for k in _NULLABLE:
            column = columns[k]
            nones = column.count(None)
            if nones == len(column):
                nulls.append(k)
            elif nones == 0:
                quoted.append(k)
                values.append(column)
            else:
                ready.append(k)
                tokens.append(map(_NULL.get, column, map("'%s'".__mod__, column)))
        for k in _COUNTS:
            column = columns[k]
            if column.count(None) == len(column):
                nulls.append(k)
            else:
                ready.append(k)
                tokens.append(map(_NULL.get, column, map(str, column)))
        rows: Any = map("','".join, zip(*values, strict=True))
        if tokens:
            rows = map(str.__add__, rows, map("',".__add__, map(",".join, zip(*tokens, strict=True))))
        else:
            rows = map(str.__add__, rows, repeat("'"))
        end = "".join(",NULL" for _ in nulls) + ")"
        names = ",".join(f"`{COLUMNS[k]}`" for k in (*quoted, *ready, *nulls))
        return names, "(x'" + (end + ",(x'").join(rows) + end


def _has_unsafe(text: str) -> bool:
    """UNSAFE.search, several times faster on a batch's worth of text: each test is a C-level scan."""
    return "'" in text or "\\" in text or "\n" in text or "\r" in text or "\x00" in text or "\x1a" in text


def _doubled(text: str | None) -> str:
    if text is None:
        return "NULL"
    return "'" + (text.replace("'", "''") if "'" in text else text) + "'"


def _backslashed(text: str | None) -> str:
    if text is None:
        return "NULL"
    return "'" + (text.translate(_ESCAPES) if UNSAFE.search(text) else text) + "'"


def _count(value: Any) -> str:
    return "NULL" if value is None else str(int(value))
