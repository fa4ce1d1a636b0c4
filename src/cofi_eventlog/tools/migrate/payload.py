"""A legacy ``input_payload`` as ``metadata.payload``: the parsed JSON when JSON keeps it exactly, else the
text exactly as written, with ``metadata.payload_text`` saying why.

Parsing and writing JSON again can bend a value in silence: ``18446744073709551616`` becomes a float,
``1e-400`` becomes ``0.0``, the first of two equal keys disappears, and MariaDB's JSON check refuses a
document nested deeper than 31 levels (error 4025). Such payloads are kept as text instead.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

# metadata is {"payload": ...}: one level of its own, and MariaDB's json_valid refuses more than 31
MAX_DEPTH = 30
_SHOWN = 40  # characters of an offending literal quoted in a note
DEEP = f"nesting deeper than {MAX_DEPTH} levels, which MariaDB's JSON check refuses"


class Inexact(ValueError):
    """JSON text that parsing and writing again would not keep as written. ``kind`` names the reason
    without the value, for counting."""

    def __init__(self, kind: str, detail: str | None = None) -> None:
        super().__init__(detail or kind)
        self.kind = kind


def _quoted(literal: str) -> str:
    return literal if len(literal) <= _SHOWN else literal[:_SHOWN] + "…"


def _integer(literal: str) -> int:
    try:
        value = int(literal)
    except ValueError:  # beyond Python's int-from-text digit limit
        raise Inexact("an integer beyond 64 bits", f"an integer of {len(literal)} digits") from None
    if not -(1 << 63) <= value < (1 << 64):
        raise Inexact("an integer beyond 64 bits", f"the integer {_quoted(literal)}, beyond 64 bits")
    return value


def _number(literal: str) -> float:
    value = float(literal)
    try:
        exact = Decimal(repr(value)) == Decimal(literal)
    except InvalidOperation:  # inf or nan: the literal overflowed
        exact = False
    if not exact:
        raise Inexact("a number a double cannot hold exactly",
                      f"the number {_quoted(literal)}, which a double would hold as {value!r}")
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise Inexact("a repeated key", f"the key {_quoted(json.dumps(key))} more than once")
        value[key] = item
    return value


def _too_deep(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def parse_exact(text: str) -> Any:
    """The JSON value of ``text``; Inexact when writing it back would change it, ValueError when not JSON."""
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_number, parse_constant=_constant,
                           object_pairs_hook=_object)
    except RecursionError:
        raise Inexact(DEEP) from None
    if _too_deep(value, MAX_DEPTH):
        raise Inexact(DEEP)
    return value


def payload_metadata(payload: Any) -> tuple[dict[str, Any], str | None]:
    """(metadata, the kind of reason the payload is kept as text, or None when it is parsed JSON).
    ``metadata.payload_text`` gives the row's own reason. Bytes that are not UTF-8 are kept as hex."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        raw = bytes(payload)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            kind = "input_payload kept as hex: bytes that are not UTF-8"
            return {"payload": "hex:" + raw.hex(), "payload_text": "bytes that are not UTF-8, kept as hex"}, kind
    else:
        text = str(payload)
    try:
        meta = {"payload": parse_exact(text)}
        orjson.dumps(meta)  # a lone surrogate escape parses but cannot be written
        return meta, None
    except Inexact as exc:
        kind = f"input_payload kept as the original text: JSON holding {exc.kind}"
        why = f"JSON holding {exc}; kept as the original text"
    except (ValueError, orjson.JSONEncodeError):
        kind, why = "input_payload kept as text: not JSON", "not JSON; kept as text"
    return {"payload": text, "payload_text": why}, kind
