"""The events table's columns as the library declares them and as a database really has them.

Both become :class:`Column`: what a column can hold (characters, bytes, an integer range, fractional
seconds) and whether it takes NULL. ``init-db`` compares the two to widen an older table; the sinks
bound every value to the column it meets, so a narrower column cuts a value (counted) rather than
refusing the row.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, replace
from typing import Any

TEXT_OCTETS = {"tinytext": 255, "text": 65535, "mediumtext": 16777215, "longtext": 4294967295,
               "json": 4294967295}
BLOB_OCTETS = {"tinyblob": 255, "blob": 65535, "mediumblob": 16777215, "longblob": 4294967295}
INT_BITS = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "integer": 32, "bigint": 64}
CHARSET_BYTES = {"utf8mb4": 4, "utf8mb3": 3, "utf8": 3, "latin1": 1, "ascii": 1, "ucs2": 2, "utf16": 4,
                 "utf32": 4}
FULL_UNICODE = "utf8mb4"
_TYPE = re.compile(r"^([a-z]+)(?:\((\d+)(?:,\d+)?\))?(.*)$")
_DDL_COLUMN = {"mysql": re.compile(r"^\s*`(\w+)` (.+?),?$"), "sqlite": re.compile(r"^\s*(\w+) ([A-Z].*?),?$")}


@dataclass(frozen=True)
class Column:
    """One column. ``kind`` is text, binary, int, time or other (a type whose bounds are not judged)."""

    name: str
    type: str  # lower case, as MySQL spells it: varchar(255), int(11) unsigned, datetime(6)
    kind: str
    nullable: bool
    chars: int | None = None  # char/varchar: most characters
    octets: int | None = None  # text and binary kinds: most bytes
    charset: str | None = None
    collation: str | None = None
    low: int | None = None  # int kinds: the range
    high: int | None = None
    fsp: int = 0  # time kinds: digits of fractional seconds
    default: str | None = None  # SQL text of the default, to restate it when the column is modified
    on_update: str | None = None
    comment: str = ""

    @property
    def base(self) -> str:
        return self.type.split("(")[0].split()[0]


def describe(name: str, sql_type: str, nullable: bool, charset: str | None = None, **more: Any) -> Column:
    """A column of a MySQL type (``VARCHAR(255)``, ``int(10) unsigned``, ``JSON``). Text kinds are utf8mb4
    unless ``charset`` says otherwise."""
    spelled = sql_type.lower().strip()
    match = _TYPE.match(spelled)
    base, size = (match.group(1), int(match.group(2)) if match.group(2) else None) if match else (spelled, None)
    column = Column(name, spelled, "other", nullable, **more)
    if base in ("char", "varchar") or base in TEXT_OCTETS:
        cs = charset or FULL_UNICODE
        octets = size * CHARSET_BYTES.get(cs, 4) if size is not None else TEXT_OCTETS.get(base, 255)
        return replace(column, kind="text", chars=size if base in ("char", "varchar") else None, octets=octets,
                       charset=cs)
    if base in ("binary", "varbinary") or base in BLOB_OCTETS:
        return replace(column, kind="binary", octets=size if size is not None else BLOB_OCTETS.get(base, 1))
    if base in INT_BITS:
        bits = INT_BITS[base]
        low, high = (0, (1 << bits) - 1) if "unsigned" in spelled else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        return replace(column, kind="int", low=low, high=high)
    if base in ("datetime", "timestamp"):
        return replace(column, kind="time", fsp=size or 0)
    return column


def declared(dialect: str, ddl: str) -> dict[str, Column]:
    """The columns of the library's own CREATE TABLE, in table order."""
    columns: dict[str, Column] = {}
    for line in ddl.splitlines()[1:]:
        match = _DDL_COLUMN[dialect].match(line)
        if not match or line.lstrip().startswith(("PRIMARY", "KEY", "UNIQUE", "INDEX", "CREATE", ")")):
            continue
        name, definition = match.groups()
        nullable = "NOT NULL" not in definition
        sql_type = definition.split(" ")[0]
        columns[name] = describe(name, sql_type, nullable) if dialect == "mysql" else \
            Column(name, sql_type.lower(), "other", nullable)
    return columns


def mysql_columns(cursor: Any, table: str) -> dict[str, Column]:
    """The table's columns as the server has them; empty when the table does not exist."""
    cursor.execute("SELECT column_name, column_type, is_nullable, character_set_name, collation_name, "
                   "column_default, extra, column_comment, VERSION() FROM information_schema.columns "
                   "WHERE table_schema = DATABASE() AND table_name = %s ORDER BY ordinal_position", (table,))
    columns: dict[str, Column] = {}
    for name, sql_type, nullable, charset, collation, default, extra, comment, version in cursor.fetchall():
        extra = str(extra or "")
        if default is not None and "mariadb" not in str(version).lower() and "DEFAULT_GENERATED" not in extra:
            default = "'" + str(default).replace("\\", "\\\\").replace("'", "''") + "'"  # MySQL gives the literal
        on_update = re.search(r"on update (\S+)", extra, re.IGNORECASE)
        columns[name] = describe(name, sql_type, nullable == "YES", charset, collation=collation,
                                 default=None if default is None else str(default),
                                 on_update=on_update.group(1) if on_update else None, comment=comment or "")
    return columns


def sqlite_columns(conn: sqlite3.Connection, table: str) -> dict[str, Column]:
    """The table's columns; SQLite bounds no type, so only NOT NULL is read."""
    rows = conn.execute("SELECT name, type, \"notnull\" FROM pragma_table_info(?)", (table,)).fetchall()
    return {name: Column(name, str(sql_type).lower(), "other", not notnull) for name, sql_type, notnull in rows}


@dataclass(frozen=True)
class Review:
    """How a column falls short of the library's: the reasons, the type that would widen it (None: keep
    the type), and what init-db cannot change on its own."""

    reasons: tuple[str, ...] = ()
    widen_to: str | None = None
    blocked: str | None = None

    @property
    def needed(self) -> bool:
        return bool(self.reasons)


def review(actual: Column, wanted: Column) -> Review:
    """Compare a column with the library's; never proposes anything narrower than what is there."""
    reasons: list[str] = []
    widen_to: str | None = None
    blocked: str | None = None
    if wanted.nullable and not actual.nullable:
        reasons.append("is NOT NULL, and some events have no value for it")
    if wanted.kind == "text":
        widen_to, blocked = _text(actual, wanted, reasons)
    elif wanted.kind == "binary":
        if actual.kind == "text":
            reasons.append(f"is {actual.type}, text; event ids are {wanted.octets} raw bytes")
            widen_to = f"varbinary({max(wanted.octets or 0, actual.octets or 0)})"
        elif actual.kind == "binary" and (actual.octets or 0) < (wanted.octets or 0):
            reasons.append(f"is {actual.type}, shorter than {wanted.type}")
            widen_to = f"varbinary({wanted.octets})"
        elif actual.kind != "binary":
            blocked = f"is {actual.type}; the library writes {wanted.type}"
    elif wanted.kind == "int":
        if actual.kind != "int":
            blocked = f"is {actual.type}; the library writes {wanted.type}"
        elif (actual.low or 0) > (wanted.low or 0) or (actual.high or 0) < (wanted.high or 0):
            if (actual.low or 0) >= (wanted.low or 0) and (actual.high or 0) <= (wanted.high or 0):
                reasons.append(f"is {actual.type}, narrower than {wanted.type}")
                widen_to = wanted.type
            else:
                blocked = f"is {actual.type}: no type holds both its values and {wanted.type}'s"
    elif wanted.kind == "time":
        if actual.kind != "time":
            blocked = f"is {actual.type}; the library writes {wanted.type}"
        elif actual.fsp < wanted.fsp:
            reasons.append(f"is {actual.type}, which drops the microseconds")
            widen_to = f"{actual.base}({wanted.fsp})"
    if blocked:
        reasons.append(blocked)
    return Review(tuple(reasons), widen_to, blocked)


def _text(actual: Column, wanted: Column, reasons: list[str]) -> tuple[str | None, str | None]:
    if actual.kind != "text":
        if actual.kind == "binary" and (actual.octets or 0) >= (wanted.octets or 0):
            return None, None
        return None, f"is {actual.type}; the library writes {wanted.type}"
    same_in_full_unicode = describe(actual.name, actual.type, actual.nullable)
    if actual.chars is not None and wanted.chars is not None:
        short = actual.chars < wanted.chars
    else:
        short = (same_in_full_unicode.octets or 0) < (wanted.octets or 0)
    if short:
        reasons.append(f"is {actual.type}, narrower than {wanted.type}")
    if actual.charset != FULL_UNICODE:
        reasons.append(f"is in character set {actual.charset}, which cannot store every character")
    elif not short:
        return None, None
    if not short:
        return actual.type, None
    if actual.chars is not None and wanted.chars is not None:
        return f"varchar({max(actual.chars, wanted.chars)})", None
    # JSON would add a validity CHECK, a constraint the column did not have: plain LONGTEXT instead
    return ("longtext" if wanted.base == "json" else wanted.type), None


def mysql_unique_event_id(cursor: Any, table: str) -> bool:
    """Whether a PRIMARY or UNIQUE key of the table is eventId alone (whole, not a prefix): only such a key
    makes a retried write skip the rows already stored."""
    cursor.execute("SELECT index_name, GROUP_CONCAT(CONCAT(column_name, IF(sub_part IS NULL, '', '(part)')) "
                   "ORDER BY seq_in_index) FROM information_schema.statistics WHERE table_schema = DATABASE() "
                   "AND table_name = %s AND non_unique = 0 GROUP BY index_name", (table,))
    return any(str(columns) == "eventId" for _, columns in cursor.fetchall())


def sqlite_unique_event_id(conn: sqlite3.Connection, table: str) -> bool:
    """The same for SQLite: a UNIQUE index or the PRIMARY KEY on eventId alone."""
    primary = [r[0] for r in conn.execute("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk",
                                          (table,))]
    if primary == ["eventId"]:
        return True
    for (name,) in conn.execute("SELECT name FROM pragma_index_list(?) WHERE \"unique\" AND partial = 0",
                                (table,)).fetchall():
        columns = [r[0] for r in conn.execute("SELECT name FROM pragma_index_info(?) ORDER BY seqno", (name,))]
        if columns == ["eventId"]:
            return True
    return False
