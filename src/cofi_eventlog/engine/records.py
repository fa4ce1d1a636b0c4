"""Journal records read back: each line one call's arguments, or ``{"row": [...]}`` for a row the caller's
thread built (see journal.py); anything else was not written by this library, and is kept aside."""

from __future__ import annotations

from typing import Any

import orjson


def decode(data: bytes) -> tuple[list[Any], list[bytes]]:
    """The calls and rows of journal records (see journal.py), as ``build_rows`` takes them, and the
    records that are not readable as either."""
    try:
        items: list[Any] = orjson.loads(b"[" + data[:-1].replace(b"\n", b",") + b"]")
    except orjson.JSONDecodeError:
        items = [_loads(line) for line in data[:-1].split(b"\n")]
    if set(map(type, items)) == {list} and set(map(len, items)) == {12}:
        return items, []  # calls only, each of the right shape: the common case, checked in C
    unreadable: list[bytes] = []
    calls: list[Any] = []
    for item in items:
        if type(item) is list and len(item) == 12:
            calls.append(item)
        elif type(item) is dict and _is_row(item.get("row")):
            row = item["row"]
            calls.append((bytes.fromhex(row[0]), *row[1:]))
        else:
            unreadable.append(item if type(item) is bytes else orjson.dumps(item))
    return calls, unreadable


def _loads(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return line


def _is_row(row: Any) -> bool:
    if type(row) is not list or len(row) != 11 or type(row[0]) is not str or len(row[0]) != 32:
        return False
    try:
        bytes.fromhex(row[0])
    except ValueError:
        return False
    return True
