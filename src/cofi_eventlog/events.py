"""The event model: raw call arguments in, bounded and JSON-safe rows out.

The caller's thread only packs its arguments into a tuple (:data:`Raw`); turning them into a row —
ids, text bounds, JSON, tracebacks — happens on the writer thread, or on the caller's thread in
strict mode, where every coercion becomes an exception naming the argument instead.
"""

from __future__ import annotations

import enum
import math
import os
import re
import traceback
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import orjson

from .sinks.base import Row

# (eventType, batch_id, stage, file_name, message|exception, gpu_ip, processed, total, payload, metadata,
#  time_ns, seq). seq numbers the logger's calls; with time_ns it fixes the eventId, so normalizing
#  the same call twice (the writer and a closer at a deadline) gives the same row.
Raw = tuple[str, Any, Any, Any, Any, Any, Any, Any, Any, Any, int, int]

LIMITS = {"batch_id": 128, "stage": 64, "file_name": 1024, "gpu_ip": 64, "message": 65536}
MAX_METADATA_BYTES = 1 << 20
MAX_TRACEBACK_CHARS = 8192
# Levels of arrays and objects in one metadata document, its own object included. MariaDB's json_valid (the
# CHECK behind a JSON column) refuses 32 (error 4025), MySQL 8 refuses 101; the lower bound serves both.
MAX_JSON_DEPTH = 31
TRUNCATED = "…[truncated {} chars]"


class Coercion(Exception):
    """One argument was changed to fit; strict mode raises it as ValueError or TypeError."""

    def __init__(self, argument: str, problem: str, *, wrong_type: bool = False) -> None:
        super().__init__(f"{argument}: {problem}")
        self.argument = argument
        self.wrong_type = wrong_type

    def as_error(self) -> Exception:
        return (TypeError if self.wrong_type else ValueError)(str(self))


# Bytes 9-10 of every eventId migrated from a legacy table (see tools/migrate): a live id never has them.
MIGRATED_MARK = b"PL"


class EventIds:
    """Unique, time-ordered 16-byte ids: time_ns (8) + random node (4) + the call's sequence number (4).

    Cheaper than uuid4 (no urandom per id). The node is drawn per logger and again in a forked
    child, so two processes never share one. It never begins with MIGRATED_MARK, so a migrated
    event is told from a live one by its id alone.
    """

    def __init__(self, node: int | None = None) -> None:
        """``node``: the node of an earlier process's ids (a journal it left), so they come out the same."""
        if node is None:
            self.reseed()
        else:
            self._node = node

    def reseed(self) -> None:
        node = os.urandom(4)
        while node.startswith(MIGRATED_MARK):
            node = os.urandom(4)
        self._node = int.from_bytes(node, "big") << 32

    @property
    def node(self) -> int:
        return self._node

    def make(self, time_ns: int, seq: int) -> bytes:
        return ((time_ns << 64) | self._node | (seq & 0xFFFFFFFF)).to_bytes(16, "big")


def clean_text(value: Any, argument: str, notes: list[Coercion], limit: int | None = None,
               *, required: bool = False) -> str | None:
    """Text that any utf8mb4 column takes back exactly: str, no lone surrogates, bounded."""
    if value is None:
        if required:
            notes.append(Coercion(argument, "is missing"))
            return "unknown"
        return None
    if type(value) is not str:
        if isinstance(value, int) and not isinstance(value, bool) and argument == "batch_id":
            value = str(value)
        elif isinstance(value, str):
            value = str.__str__(value)
        else:
            notes.append(Coercion(argument, f"expected str, got {type(value).__name__}", wrong_type=True))
            value = _safe_repr(value) if not isinstance(value, bytes) else _bytes_text(value)
    text: str = value
    if required and not text:
        notes.append(Coercion(argument, "is empty"))
        return "unknown"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            notes.append(Coercion(argument, "lone surrogate replaced by U+FFFD"))
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    limit = limit or LIMITS[argument]
    if len(text) > limit:
        notes.append(Coercion(argument, f"{len(text)} chars, truncated to {limit}"))
        marker = TRUNCATED.format(len(text) - limit)
        text = text[: limit - len(marker)] + marker
    return text


def clean_count(value: Any, argument: str, notes: list[Coercion]) -> int | None:
    if value is None or (type(value) is int and -(1 << 63) <= value < (1 << 63)):
        return value
    try:
        number = int(value)
        if (isinstance(value, float) and number != value) or not -(1 << 63) <= number < (1 << 63):
            raise ValueError
    except Exception:  # TypeError, ValueError, OverflowError, or whatever a hostile __int__ raises
        notes.append(Coercion(argument, f"{_safe_repr(value)[:64]} is not a 64-bit integer; stored NULL",
                              wrong_type=not isinstance(value, (int, float))))
        return None
    notes.append(Coercion(argument, f"{type(value).__name__} converted to int"))
    return number


def to_json(data: dict[str, Any], notes: list[Coercion]) -> str:
    """JSON text for the metadata column, its coercions noted; bounded to MAX_METADATA_BYTES."""
    return _bounded_json(_plain(data, notes), notes)


def _plain(data: dict[str, Any], notes: list[Coercion]) -> dict[str, Any]:
    """A JSON-safe copy of data. orjson first; the slow walk only when it refused, wrote null (orjson turns
    NaN into null silently, and a coerced NaN must be counted), or nested too deep."""
    try:
        out = orjson.dumps(data)
        if b"null" not in out and depth_fits(out):
            plain: dict[str, Any] = orjson.loads(out)
            return plain
    except (TypeError, orjson.JSONEncodeError):
        pass
    walked: dict[str, Any] = _jsonable(data, "metadata", notes, 0, set())
    return walked


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


def depth_fits(out: bytes) -> bool:
    """Whether JSON text nests at most MAX_JSON_DEPTH levels. Counting brackets settles nearly every
    document at C speed; only one with more brackets than levels allowed is scanned."""
    if out.count(b"[") + out.count(b"{") <= MAX_JSON_DEPTH:
        return True
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub(b"", out)):
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return False
        else:
            depth -= 1
    return True


# Kept whole when a document is cut for size: what groups an error and says where it came from.
KEPT_WHEN_CUT = ("error_type", "traceback")


def _bounded_json(document: dict[str, Any], notes: list[Coercion]) -> str:
    """The document as JSON text; over MAX_METADATA_BYTES, the error's type and traceback stay as they
    are and the rest is cut to a preview of its text."""
    out = orjson.dumps(document)
    if len(out) <= MAX_METADATA_BYTES:
        return out.decode("utf-8")
    notes.append(Coercion("payload", f"metadata is {len(out)} bytes, truncated to {MAX_METADATA_BYTES}"))
    kept = {k: document[k] for k in KEPT_WHEN_CUT if k in document}
    rest = orjson.dumps({k: v for k, v in document.items() if k not in kept and k != "coerced"})
    preview = rest[: MAX_METADATA_BYTES // 2].decode("utf-8", "ignore")
    cut = {**kept, "truncated": preview + TRUNCATED.format(len(rest) - len(preview)),
           "coerced": [str(n) for n in notes]}
    return orjson.dumps(cut).decode("utf-8")


def _jsonable(obj: Any, path: str, notes: list[Coercion], depth: int, seen: set[int]) -> Any:
    """A JSON-safe copy of obj, whose own container sits ``depth`` levels down; every change is noted.
    An object that fails while being read (a detached ORM row, say) is stored as its repr."""
    if obj is None or obj is True or obj is False:
        return obj
    kind = type(obj)
    if kind is str:
        return clean_text(obj, path, notes, limit=MAX_METADATA_BYTES)
    if kind is int:
        if -(1 << 63) <= obj < (1 << 64):
            return obj
        notes.append(Coercion(path, "integer beyond 64 bits stored as text"))
        return str(obj)
    if kind is float:
        if math.isfinite(obj):
            return obj
        notes.append(Coercion(path, f"{obj!r} is not JSON; stored as text"))
        return repr(obj)
    try:
        return _container(obj, path, notes, depth, seen)
    except Exception as exc:
        notes.append(Coercion(path, f"{kind.__name__} could not be read ({type(exc).__name__}); stored as repr"))
        return clean_text(_safe_repr(obj), path, notes, limit=4096)


def _container(obj: Any, path: str, notes: list[Coercion], depth: int, seen: set[int]) -> Any:
    kind = type(obj)
    if isinstance(obj, (dict, list, tuple, set, frozenset)):
        if depth >= MAX_JSON_DEPTH:
            notes.append(Coercion(path, f"nested deeper than {MAX_JSON_DEPTH} levels; cut"))
            return "…[too deep]"
        if id(obj) in seen:
            notes.append(Coercion(path, "cycle; the repeated reference stored as a marker"))
            return "…[cycle]"
        seen.add(id(obj))
        try:
            if isinstance(obj, dict):
                return _object(obj, path, notes, depth, seen)
            if isinstance(obj, (set, frozenset)):
                notes.append(Coercion(path, f"{kind.__name__} stored as a list"))
                items: Any = sorted(obj, key=_safe_repr)
            else:
                items = obj
            return [_jsonable(v, f"{path}[{i}]", notes, depth + 1, seen) for i, v in enumerate(items)]
        finally:
            seen.discard(id(obj))
    if isinstance(obj, (bytes, bytearray, memoryview)):
        notes.append(Coercion(path, f"{kind.__name__} stored as text"))
        return _bytes_text(bytes(obj))
    known = _WELL_KNOWN.get(kind) or next((f for t, f in _WELL_KNOWN_BASES if isinstance(obj, t)), None)
    if known is not None:
        value, change = known(obj)
        if change:
            notes.append(Coercion(path, change))
        return _jsonable(value, path, notes, depth, seen)
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # numpy arrays and scalars, pandas series
        value, change = _numpy(obj)
        notes.append(Coercion(path, change))
        return _jsonable(value, path, notes, depth, seen)
    try:  # dates, dataclasses: whatever orjson takes natively
        return orjson.loads(orjson.dumps(obj))
    except (TypeError, orjson.JSONEncodeError):
        notes.append(Coercion(path, f"{kind.__name__} is not JSON; stored as repr"))
        return clean_text(_safe_repr(obj), path, notes, limit=4096)


def _decimal(value: Decimal) -> tuple[Any, str]:
    """A number where a JSON number holds it exactly (1.10 is 1.1), else its text."""
    if value.is_finite():
        if value == value.to_integral_value() and -(1 << 63) <= value < (1 << 64):
            return int(value), "Decimal stored as a number"
        number = float(value)
        if math.isfinite(number) and Decimal(repr(number)) == value:
            return number, "Decimal stored as a number"
    return str(value), "Decimal stored as text (a float would change it)"


def _numpy(value: Any) -> tuple[Any, str]:
    """An array as its list; a scalar as the Python number it holds, or as text where a float would bend it
    (a long double)."""
    name = type(value).__name__
    plain = value.tolist()
    if isinstance(plain, list):
        return plain, f"{name} stored as a list"
    if type(plain) in (int, float, bool):
        return plain, f"{name} stored as {'a boolean' if type(plain) is bool else 'a number'}"
    return str(value), f"{name} stored as text (a float would change it)"


def _numeric_subclass(value: Any) -> tuple[Any, str]:
    if isinstance(value, float):
        return float(value), f"{type(value).__name__} stored as a float"
    return int(value), ""  # an int subclass keeps its value exactly


def _enum_value(value: enum.Enum) -> tuple[Any, str]:
    return value.value, ""  # as orjson writes it


_WELL_KNOWN: dict[type, Any] = {
    Decimal: _decimal,
    uuid.UUID: lambda v: (str(v), ""),  # as orjson writes it
    timedelta: lambda v: (v.total_seconds(), "timedelta stored as seconds"),
}
# Checked in order with isinstance, for types known by a base: an enum before the int it may also be.
_WELL_KNOWN_BASES: tuple[tuple[Any, Any], ...] = (
    (enum.Enum, _enum_value),
    (os.PathLike, lambda v: (str(os.fspath(v)), f"{type(v).__name__} stored as text")),
    (str, lambda v: (str.__str__(v), "")),
    ((int, float), _numeric_subclass),
    (timedelta, lambda v: (v.total_seconds(), "timedelta stored as seconds")),
    (Decimal, _decimal),
    (uuid.UUID, lambda v: (str(v), "")),
)


def _object(obj: dict[Any, Any], path: str, notes: list[Coercion], depth: int, seen: set[int]) -> dict[str, Any]:
    """Text keys first, so that a key coerced to text (``1``) never takes the place of a real one (``"1"``);
    a coerced key that would collide is renamed, and the renaming is noted."""
    pairs = sorted(obj.items(), key=lambda kv: type(kv[0]) is not str)
    out: dict[str, Any] = {}
    for key, value in pairs:
        if isinstance(key, str):
            text = clean_text(key, path, notes, limit=1024) or ""
        else:
            notes.append(Coercion(path, f"{type(key).__name__} key {_safe_repr(key)[:32]} as text"))
            text = clean_text(_safe_repr(key), path, notes, limit=1024) or ""
        if text in out:
            base = text if isinstance(key, str) else f"{text} ({type(key).__name__})"
            text, n = base, 2
            while text in out:
                text, n = f"{base} ({n})", n + 1
            notes.append(Coercion(path, f"key {_safe_repr(key)[:32]} collides with another; stored as {text!r}"))
        out[text] = _jsonable(value, f"{path}.{text}", notes, depth + 1, seen)
    return out


def _bytes_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + value.hex()


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the event
        return f"<{type(value).__name__} with failing repr: {type(exc).__name__}>"


# A class of the main script is __main__.X in the parent and __mp_main__.X in a spawned worker: one name.
MAIN_MODULES = {"__mp_main__": "__main__"}


def describe_error(error: Any, notes: list[Coercion], meta: dict[str, Any]) -> str | None:
    """The message for an error argument: text as given; an exception keeps its type and a short traceback."""
    if isinstance(error, BaseException):
        module = type(error).__module__
        module = MAIN_MODULES.get(module, module)
        meta["error_type"] = f"{module}.{type(error).__qualname__}".removeprefix("builtins.")
        if error.__traceback__ is not None:
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__, limit=-8))
            meta["traceback"] = text[-MAX_TRACEBACK_CHARS:]
        error = _safe_str(error) or type(error).__name__
    return clean_text(error, "message", notes)


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not lose the event
        return _safe_repr(value)


def normalize(raw: Raw, ids: EventIds) -> tuple[Row, list[Coercion]]:
    """Build the row for one call; coercions are listed in metadata["coerced"] and returned.

    Never raises: an argument that fails while being read is stored as its repr, and should anything
    else fail, the event is kept with every argument as text (see :func:`_as_text`)."""
    try:
        return _build(raw, ids)
    except Exception as exc:
        return _as_text(raw, ids, exc)


def _build(raw: Raw, ids: EventIds) -> tuple[Row, list[Coercion]]:
    etype, batch_id, stage, file_name, message, gpu_ip, processed, total, payload, metadata, time_ns, seq = raw
    notes: list[Coercion] = []
    meta: dict[str, Any] = {}
    if metadata is not None:
        if not isinstance(metadata, dict):
            notes.append(Coercion("metadata", f"expected dict, got {type(metadata).__name__}; stored under "
                                              "'metadata'", wrong_type=True))
            meta["metadata"] = metadata
        else:
            try:
                meta.update(metadata)
            except Exception as exc:
                notes.append(Coercion("metadata", f"{type(metadata).__name__} could not be read "
                                                  f"({type(exc).__name__}); stored as repr", wrong_type=True))
                meta["metadata"] = _safe_repr(metadata)
    batch = clean_text(batch_id, "batch_id", notes, required=True)
    text = describe_error(message, notes, meta)
    row_stage = clean_text(stage, "stage", notes)
    fname = clean_text(file_name, "file_name", notes)
    gpu = clean_text(gpu_ip, "gpu_ip", notes)
    done = clean_count(processed, "processed", notes)
    count = clean_count(total, "total", notes)
    if payload is not None:
        meta["payload"] = payload
    document = _plain(meta, notes) if meta else {}
    if notes:
        document["coerced"] = [str(n) for n in notes]
    meta_json = _bounded_json(document, notes) if document else None
    row: Row = (ids.make(time_ns, seq), batch or "unknown", row_stage, etype, fname, text, gpu, done, count,
                meta_json, time_ns // 1000)
    return row, notes


def _as_text(raw: Raw, ids: EventIds, exc: Exception) -> tuple[Row, list[Coercion]]:
    """The last resort: the event with each argument as its repr, so that nothing is lost."""
    etype, batch_id, stage, file_name, message, gpu_ip, processed, total, payload, metadata, time_ns, seq = raw
    note = Coercion("event", f"could not be serialized ({type(exc).__name__}); arguments stored as text",
                    wrong_type=True)

    def text(value: Any, argument: str) -> str | None:
        if value is None or type(value) is str:
            return clean_text(value, argument, [])
        return clean_text(_safe_repr(value), argument, [])

    call = {"processed": _safe_repr(processed), "total": _safe_repr(total), "payload": _safe_repr(payload),
            "metadata": _safe_repr(metadata)}
    meta = orjson.dumps({"coerced": [str(note)], "call": {k: clean_text(v, k, [], limit=4096)
                                                          for k, v in call.items()}}).decode()
    row: Row = (ids.make(time_ns, seq), text(batch_id, "batch_id") or "unknown", text(stage, "stage"), etype,
                text(file_name, "file_name"), text(message, "message"), text(gpu_ip, "gpu_ip"), None, None,
                meta, time_ns // 1000)
    return row, [note]
