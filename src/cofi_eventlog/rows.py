"""Building the rows of a batch of calls at once.

The writer's cost per event is what limits throughput and steals the callers' GIL, and most calls need no
coercion at all: text within its bounds, counts that are plain ints, metadata that orjson takes as it is.
For those the work is done a column at a time — types, lengths and encodability checked by one C-level
pass over each column, ids packed by ``struct``, metadata serialized by a chain of ``map`` — instead of
a dozen Python steps per call. A call that fails a check (an exception as the message, a long file
name, a NaN in its metadata) is found and built by :func:`events.normalize`, alone, with exactly the
row it always gets; the others are unaffected.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import orjson

from .events import LIMITS, MAX_JSON_DEPTH, MAX_METADATA_BYTES, EventIds, depth_fits, normalize
from .sinks.base import Row, RowBatch

_ID = struct.Struct(">QII")  # time_ns, the logger's node, the call's sequence number
_INT64 = 1 << 63
_FIRST = itemgetter(0)
# Raw slots: 0 eventType, 1 batch_id, 2 stage, 3 file_name, 4 message, 5 gpu_ip, 6 processed, 7 total,
# 8 payload, 9 metadata, 10 time_ns, 11 seq
_TEXT_SLOTS = ((1, LIMITS["batch_id"]), (2, LIMITS["stage"]), (3, LIMITS["file_name"]), (4, LIMITS["message"]),
               (5, LIMITS["gpu_ip"]))


def build_rows(items: Sequence[Any], ids: EventIds) -> tuple[Sequence[Row], int]:
    """The rows for a batch of calls (tuples, or the lists their JSON decodes to), in order, and how many
    were coerced. Rows made on the caller's thread (strict and spool modes) pass through."""
    if not items:
        return [], 0
    if bytes in set(map(type, map(_FIRST, items))):
        return _mixed(items, ids)
    columns: list[Any] = list(zip(*items, strict=True))
    careful = _careful_calls(columns)
    if careful:  # out of the columns' way: these rows are built one by one below
        columns = [list(column) for column in columns]
        for index in careful:
            for slot in (2, 3, 4, 5, 6, 7, 8, 9):
                columns[slot][index] = None
            columns[1][index] = ""
    texts, unfit = _metadata(columns[8], columns[9])
    careful |= unfit
    seqs = columns[11]
    if max(seqs) > 0xFFFFFFFF:
        seqs = list(map((0xFFFFFFFF).__and__, seqs))
    batch = RowBatch((list(map(_ID.pack, columns[10], repeat(ids.node >> 32), seqs)), columns[1], columns[2],
                      columns[0], columns[3], columns[4], columns[5], columns[6], columns[7], texts,
                      list(map((1000).__rfloordiv__, columns[10]))))
    if not careful:
        return batch, 0
    rows = batch.rows()
    coerced = 0
    for index in careful:
        rows[index], notes = normalize(items[index], ids)
        coerced += bool(notes)
    return rows, coerced


def _mixed(items: Sequence[Any], ids: EventIds) -> tuple[list[Row], int]:
    """A batch holding rows made on the caller's thread (they pass through): the calls among them are
    built together."""
    built, coerced = build_rows([item for item in items if type(item[0]) is not bytes], ids)
    calls = iter(built)
    return [item if type(item[0]) is bytes else next(calls) for item in items], coerced


def _careful_calls(columns: list[Any]) -> set[int]:
    """The calls whose text or counts need the careful path. All the text is checked in a few C-level
    passes, and a column searched only when they find something in it."""
    careful: set[int] = set()
    text_columns = [columns[slot] for slot, _ in _TEXT_SLOTS]
    if not set(map(type, chain.from_iterable(text_columns))) <= {str, type(None)} or None in columns[1]:
        for slot, _ in _TEXT_SLOTS:  # a missing batch id becomes "unknown"
            careful.update(i for i, v in enumerate(columns[slot])
                           if type(v) is not str and (v is not None or slot == 1))
        text_columns = [[v if type(v) is str else None for v in column] for column in text_columns]
    for (slot, limit), column in zip(_TEXT_SLOTS, text_columns, strict=True):
        present = list(filter(None, column))
        if slot == 1 and len(present) < len(column):  # an empty batch id becomes "unknown" too
            careful.update(i for i, v in enumerate(column) if not v)
        if present and max(map(len, present)) > limit:
            careful.update(i for i, v in enumerate(column) if v and len(v) > limit)
    joined = "".join(filter(None, chain.from_iterable(text_columns)))
    if not joined.isascii() and not _encodes(joined):  # a lone surrogate somewhere
        for column in text_columns:
            careful.update(i for i, v in enumerate(column) if v and not _encodes(v))
    for slot in (6, 7):
        column = columns[slot]
        if _all_none(column):
            continue
        if not set(map(type, column)) <= {int, type(None)}:
            careful.update(i for i, v in enumerate(column) if type(v) is not int and v is not None)
            column = [v if type(v) is int else None for v in column]
        counts = list(filter(None, column))
        if counts and not (min(counts) >= -_INT64 and max(counts) < _INT64):
            careful.update(i for i, v in enumerate(column) if v and not -_INT64 <= v < _INT64)
    return careful


def _metadata(payloads: Sequence[Any], metadata: Sequence[Any]) -> tuple[list[str | None], set[int]]:
    """Each call's metadata document as JSON text (None without one), and the calls whose document needs
    the careful path: not JSON as orjson takes it, empty, or to be bounded (a null — orjson's NaN —, too
    deep, too big)."""
    n = len(payloads)
    if _all_none(payloads):
        documents: Sequence[Any] = metadata
        if _all_none(metadata):
            return [None] * n, set()
    else:
        documents = [m if p is None else _with_payload(m, p) for m, p in zip(metadata, payloads, strict=True)]
    texts: list[str | None]
    kinds = set(map(type, documents))
    if kinds <= {dict, type(None)}:
        try:
            if type(None) in kinds:
                texts = [None if d is None else orjson.dumps(d).decode() for d in documents]
            else:
                texts = list(map(bytes.decode, map(orjson.dumps, documents)))
        except (TypeError, orjson.JSONEncodeError):
            pass
        else:
            present: list[str] = list(filter(None, texts))
            if "{}" not in present and _documents_fit(present):  # an empty document is stored as none
                return texts, set()
    texts, unfit = [], set()  # one by one, to find the calls at fault
    for index, document in enumerate(documents):
        text = None if document is None else _document(document)
        if text is None and document is not None:
            unfit.add(index)
        texts.append(text)
    return texts, unfit


_NONE = {type(None)}


def _all_none(column: Sequence[Any]) -> bool:
    """Whether every value is None, by type: ``list.count(None)`` compares with ``==``, and an object whose
    ``==`` answers an array (numpy, pandas) raises there and would lose the whole batch."""
    return set(map(type, column)) == _NONE


def _with_payload(metadata: Any, payload: Any) -> Any:
    if metadata is None:
        return {"payload": payload}
    if type(metadata) is dict:
        return {**metadata, "payload": payload}
    return _UNFIT  # not a dict: the careful path says so


_UNFIT = object()


def _document(document: Any) -> str | None:
    """A document as JSON text if it needs no coercion, else None."""
    if type(document) is not dict or not document:  # an empty document is stored as none at all
        return None
    try:
        text: str = orjson.dumps(document).decode()
    except (TypeError, orjson.JSONEncodeError):
        return None
    return text if _documents_fit([text]) else None


def _documents_fit(texts: list[str]) -> bool:
    """Whether metadata documents need no coercion: no null (orjson writes NaN as null), each within
    MAX_METADATA_BYTES and the nesting the server accepts. One scan for a batch; each document has at
    least one opening bracket, so the batch needs a closer look only when it holds more than a few extra."""
    if not texts:
        return True
    joined = "\n".join(texts)
    if "null" in joined:
        return False
    if max(map(len, texts)) * 4 > MAX_METADATA_BYTES and \
            any(len(t.encode("utf-8")) > MAX_METADATA_BYTES for t in texts):
        return False
    extra = joined.count("[") + joined.count("{") - len(texts)
    return extra < MAX_JSON_DEPTH or all(depth_fits(t.encode("utf-8")) for t in texts)


def _encodes(text: str) -> bool:
    """Whether text is valid UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
