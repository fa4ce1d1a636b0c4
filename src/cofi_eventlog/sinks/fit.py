"""Bounding rows to the columns a table really has, where it is narrower than the library's own.

An older table may hold VARCHAR(255) where the library writes 1024 characters, INT for a 64-bit count,
or NOT NULL where an event has no value. A strict server refuses such a row (and the writer would
dead-letter it); a lenient one cuts it in silence. Here the value is cut or clamped instead, the row's
``metadata.coerced`` says what changed, and the sink counts the row.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from .base import COLUMNS, Row, SinkError
from .columns import FULL_UNICODE, Column

TRUNCATED = "…[truncated {} chars]"
METADATA: Final = 9  # COLUMNS.index("metadata"), as a literal so that the row's type is known
EMPTY: dict[str, Any] = {"processed": 0, "total": 0, "metadata": "{}"}  # what a NOT NULL column gets for None
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
SINGLE_BYTE = {"latin1": "cp1252", "ascii": "ascii"}  # MySQL's latin1 is Windows-1252
Fit = Callable[[Any], "tuple[Any, str | None]"]  # value -> (value to store, what was changed or None)


class Fitter:
    """The checks for one table's narrower columns; :meth:`build` returns None when nothing is narrower."""

    def __init__(self, fits: list[tuple[int, Fit]], metadata_octets: int | None, metadata_type: str) -> None:
        self._fits = fits
        self._metadata_octets = metadata_octets
        self._metadata_type = metadata_type

    @classmethod
    def build(cls, table: str, actual: Mapping[str, Column], wanted: Mapping[str, Column]) -> Fitter | None:
        """Raises SinkError (transient: a person can fix it) when no value could ever fit: an eventId column
        of text, which the 16-byte ids are not."""
        fits: list[tuple[int, Fit]] = []
        metadata_octets: int | None = None
        for index, name in enumerate(COLUMNS):
            have, want = actual.get(name), wanted[name]
            if have is None:
                continue  # a missing column fails every INSERT with a clear error; init-db adds it
            if name == "eventId":
                if want.kind == "binary" and (have.kind != "binary" or (have.octets or 0) < (want.octets or 0)):
                    raise SinkError(f"{table}.eventId is {have.type}: event ids are {want.octets} raw bytes; widen "
                                    "the column with `cofi-eventlog init-db`", transient=True)
                continue
            if name == "metadata" and have.kind in ("text", "binary") and (have.octets or 0) < (want.octets or 0):
                metadata_octets = have.chars or have.octets  # bytes: never more than characters
            fit = _fit_for(have, want)
            if fit is not None:
                fits.append((index, fit))
        if not fits and metadata_octets is None:
            return None
        return cls(fits, metadata_octets, actual["metadata"].type if "metadata" in actual else "")

    def fit(self, row: Row) -> Row | None:
        """The row bounded to the columns, or None when it fits as it is."""
        notes: list[str] = []
        values: list[Any] | None = None
        for index, fit in self._fits:
            value, note = fit(row[index])
            if note is not None:
                values = values if values is not None else list(row)
                values[index] = value
                notes.append(note)
        metadata: str | None = row[METADATA] if values is None else values[METADATA]
        if notes:
            metadata = _marked(metadata, notes)
        if self._metadata_octets is not None and metadata is not None \
                and len(metadata.encode("utf-8")) > self._metadata_octets:
            metadata = _shrunk(metadata, self._metadata_octets, self._metadata_type)
        if metadata is row[METADATA]:
            return None
        values = values if values is not None else list(row)
        values[METADATA] = metadata
        return tuple(values)


def _fit_for(have: Column, want: Column) -> Fit | None:
    """The check for one column, or None when it holds whatever the library writes into it."""
    name = have.name
    null_fix = want.nullable and not have.nullable
    if have.kind in ("text", "binary") and want.kind in ("text", "binary"):
        chars = octets = None
        if name == "metadata":
            pass  # bounded as JSON, once the notes are added
        elif have.chars is not None:  # CHAR/VARCHAR count characters
            chars = have.chars if have.chars < (want.chars or want.octets or 0) else None
        elif (have.octets or 0) < (want.octets or 0):  # TEXT and BLOB types count bytes
            octets = have.octets
        repertoire = _repertoire(have.charset) if have.kind == "text" else None
        if not (null_fix or chars or octets or repertoire):
            return None
        return _text_fit(have, null_fix, chars, octets, repertoire)
    if have.kind == "int" and want.kind == "int":
        low, high = have.low or 0, have.high or 0
        if not null_fix and low <= (want.low or 0) and high >= (want.high or 0):
            return None

        def fit_int(value: Any) -> tuple[Any, str | None]:
            if value is None:
                return (0, f"{name}: no value, the column is NOT NULL; stored 0") if null_fix else (None, None)
            if low <= value <= high:
                return value, None
            bounded = min(max(value, low), high)
            return bounded, f"{name}: {value} is outside {have.type}; stored {bounded}"
        return fit_int
    if null_fix:
        empty = EMPTY.get(name, "")

        def fit_null(value: Any) -> tuple[Any, str | None]:
            if value is None:
                return empty, f"{name}: no value, the column is NOT NULL; stored {empty!r}"
            return value, None
        return fit_null
    return None


def _repertoire(charset: str | None) -> Callable[[str], str] | None:
    """What a column's character set makes of text it cannot store: U+FFFD or '?' instead, as a note."""
    if charset is None or charset == FULL_UNICODE:
        return None
    if charset in ("utf8mb3", "utf8"):
        return lambda text: _ASTRAL.sub("\ufffd", text)
    codec = SINGLE_BYTE.get(charset)
    if codec is None:
        return None
    return lambda text: text.encode(codec, "replace").decode(codec)


def _text_fit(have: Column, null_fix: bool, chars: int | None, octets: int | None,
              repertoire: Callable[[str], str] | None) -> Fit:
    name = have.name
    empty = EMPTY.get(name, "")
    measure = len if have.charset in SINGLE_BYTE else _utf8_size  # bytes in the column's character set

    def fit(value: Any) -> tuple[Any, str | None]:
        if value is None:
            return (empty, f"{name}: no value, the column is NOT NULL; stored {empty!r}") if null_fix else (None, None)
        text: str = value
        notes = []
        if repertoire is not None and not text.isascii():
            replaced = repertoire(text)
            if replaced != text:
                notes.append(f"characters {have.charset} cannot store were replaced")
                text = replaced
        if chars is not None and len(text) > chars:
            notes.append(f"{len(text)} chars, cut to fit {have.type}")
            text = _cut(text, chars, len)
        if octets is not None and len(text) * 4 > octets:
            size = measure(text)
            if size > octets:
                notes.append(f"{size} bytes, cut to fit {have.type}")
                text = _cut(text, octets, measure)
        return (text, f"{name}: {'; '.join(notes)}") if notes else (value, None)
    return fit


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


def _cut(text: str, limit: int, size: Callable[[str], int]) -> str:
    """text cut so that, with the truncation marker (which counts the characters cut), it measures ``limit``."""
    for digits in range(len(str(len(text))), 0, -1):
        room = limit - size(TRUNCATED.format("9" * digits))
        if room <= 0:
            break
        kept = _prefix(text, room, size)
        if len(str(len(text) - len(kept))) == digits:
            return kept + TRUNCATED.format(len(text) - len(kept))
    return _prefix(text, limit, size)  # no room for the marker


def _prefix(text: str, room: int, size: Callable[[str], int]) -> str:
    kept = text[:room]
    while size(kept) > room:  # multi-byte characters: drop some from the end until it fits
        kept = kept[: len(kept) - max(1, (size(kept) - room) // 4)]
    return kept


def _marked(metadata: str | None, notes: list[str]) -> str:
    """The metadata JSON with the changes listed under "coerced", as the call-site checks list theirs."""
    data: Any = orjson.loads(metadata) if metadata else {}
    if not isinstance(data, dict):
        data = {"metadata": data}
    listed = data.get("coerced")
    data["coerced"] = [*(listed if isinstance(listed, list) else []), *notes]
    return orjson.dumps(data).decode("utf-8")


def _shrunk(metadata: str, octets: int, column_type: str) -> str:
    """Metadata too long for its column, as JSON that fits: a prefix of the text, then less, then ``{}``."""
    note = f"metadata: {len(metadata.encode('utf-8'))} bytes, cut to fit {column_type}"
    prefix = metadata[: octets // 2]
    while prefix:
        shrunk = orjson.dumps({"truncated": prefix, "coerced": [note]})
        if len(shrunk) <= octets:
            return shrunk.decode("utf-8")
        prefix = prefix[: len(prefix) // 2]
    for last in ({"coerced": [note]}, {"coerced": True}, {}):
        small = orjson.dumps(last)
        if len(small) <= octets:
            return small.decode("utf-8")
    return ""
