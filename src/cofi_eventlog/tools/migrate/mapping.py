"""How one ``processing_logs`` row becomes one ``batchExecutionLog`` row, and which eventId it gets.

Nothing is changed in silence. A value the events table cannot hold as it is (text longer than its
column, a payload over the metadata bound, a created_at that is not a date, text that is not UTF-8) is
stored bounded, and the event's ``metadata.coerced`` says what changed; the legacy row (and its backup)
keeps the original. A row that cannot be given an eventId is not carried, and is reported by its id.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from ...events import MAX_METADATA_BYTES, MIGRATED_MARK, TRUNCATED
from ..simulate.legacy import LEGACY_TABLE
from .payload import payload_metadata

STATUS_EVENTS = {"failed": "error", "error": "error", "success": "file_complete"}
EPOCH = datetime(1970, 1, 1)
_MAX_NS = (1 << 64) - 1
_SAMPLE = 10  # legacy ids kept per kind of note, for the run's summary
Note = Callable[[str, str], None]  # (kind, for the run's summary; detail, for the row's metadata.coerced)


class MigrationError(Exception):
    """The migration cannot go on; the message says why and what to do."""


def source_tag(table: str) -> bytes:
    """Bytes 9–12 of every eventId migrated from ``table``: the mark live ids never carry (``PL``), then
    two bytes that tell source tables apart.

    ``PLOG`` for ``processing_logs``; for any other table ``PL`` and two bytes of SHA-256 of its name in lower
    case (MySQL may fold the case of table names). Rows of two source tables with equal ids and times thus get
    different eventIds; two names whose tags collide (one pair in 65,536) would be caught by the check that
    compares every event with its legacy row.
    """
    name = table.lower()
    if name == LEGACY_TABLE:
        return b"PLOG"
    digest = hashlib.sha256(f"cofi-eventlog source table {name}".encode()).digest()
    tail = digest[:2] if digest[:2] != b"OG" else digest[2:4]
    return MIGRATED_MARK + tail


def migrated_event_id(tag: bytes, legacy_id: int, created: datetime | None) -> bytes:
    """created_at in ns since 1970, UTC (8 bytes) | the source's tag (4) | the legacy id (4).

    The same row always gets the same id, so with duplicates skipped a re-run adds nothing, and migrated ids
    sort by time among live ones (time_ns | random node | sequence). A time outside 1970–2554 (or unknown)
    is clamped to the nearest end of the 8 bytes; createdAt keeps the real date. A live id equals a migrated
    one only if a logger drew the tag as its random node and logged at that very nanosecond with a sequence
    number equal to the legacy id.
    """
    if not 0 <= legacy_id <= 0xFFFFFFFF:
        raise ValueError(f"id {legacy_id} does not fit the 4 bytes an eventId keeps for it")
    ns = 0
    if created is not None:
        delta = created - EPOCH
        ns = min(max(((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000, 0), _MAX_NS)
    return ns.to_bytes(8, "big") + tag + legacy_id.to_bytes(4, "big")


def utc_datetime(value: Any) -> datetime | None:
    """created_at as a naive UTC datetime; None when it is not a date. Naive values are UTC: the connection
    reads TIMESTAMP columns in UTC, and SQLite's 'now' is UTC."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", "replace")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    moment: datetime = value
    if moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(timezone.utc).replace(tzinfo=None)
    except OverflowError:  # an offset that moves it past year 1 or 9999
        return None


def created_text(moment: datetime) -> str:
    """createdAt as both dialects take it, for any year 1–9999: 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    return moment.isoformat(sep=" ", timespec="microseconds")


@dataclass
class Mapped:
    """One legacy row's outcome: its event row, or why it cannot be carried."""

    legacy_id: Any
    row: tuple[Any, ...] | None
    problem: str | None = None

    @property
    def batch(self) -> str | None:
        return None if self.row is None else str(self.row[1])


@dataclass
class Notes:
    """Kinds of change made to rows, each with how many rows and the first few legacy ids."""

    counts: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, kind: str, legacy_id: Any) -> None:
        self.counts[kind] += 1
        sample = self.samples.setdefault(kind, [])
        if len(sample) < _SAMPLE:
            sample.append(legacy_id)


class RowMapper:
    """Maps legacy rows (dicts) to event rows, noting every change in the row and in ``notes``."""

    def __init__(self, tag: bytes, statuses: dict[str, str], limits: dict[str, tuple[int, int]], *,
                 has_created: bool = True) -> None:
        self.tag = tag
        self.statuses = statuses
        self.limits = limits  # column → (characters, bytes), MySQL only
        self.has_created = has_created
        self.notes = Notes()

    def map(self, row: dict[str, Any]) -> Mapped:
        legacy_id = row["id"]
        if not isinstance(legacy_id, int) or isinstance(legacy_id, bool):
            return Mapped(legacy_id, None, f"id {legacy_id!r} is not an integer")
        changes: list[str] = []

        def note(kind: str, detail: str) -> None:
            self.notes.add(kind, legacy_id)
            changes.append(detail)

        created = utc_datetime(row.get("created_at"))
        if created is None and self.has_created:
            note("createdAt 1970-01-01: created_at is not a date",
                 f"created_at {_shown(row.get('created_at'))} is not a date; createdAt is 1970-01-01")
        try:
            event_id = migrated_event_id(self.tag, legacy_id, created)
        except ValueError as exc:
            return Mapped(legacy_id, None, str(exc))
        event_type = self._event_type(row, note)
        if event_type is None:
            return Mapped(legacy_id, None, f"status {_shown(row.get('status'))} has no event type; "
                                           "pass --map-status STATUS=EVENT_TYPE")
        batch = self._text(row.get("batch_id"), "batch_id", note)
        if batch is None:
            note("batchId 'unknown': batch_id is NULL", "batch_id is NULL; batchId is 'unknown'")
            batch = "unknown"
        values = {"batchId": batch, "stage": self._text(row.get("stage_name"), "stage_name", note),
                  "eventType": event_type, "fileName": self._text(row.get("call_id"), "call_id", note),
                  "message": self._text(row.get("error_message"), "error_message", note)}
        for column, value in values.items():
            values[column] = self._bounded(legacy_id, column, value, note)
        metadata = self._metadata(legacy_id, row.get("input_payload"), note, changes)
        return Mapped(legacy_id, (event_id, values["batchId"], values["stage"], values["eventType"],
                                  values["fileName"], values["message"], None, None, None, metadata,
                                  created_text(created or EPOCH)))

    def _event_type(self, row: dict[str, Any], note: Note) -> str | None:
        if "status" not in row:  # no such column: the run says so once
            return "error" if row.get("error_message") else "file_complete"
        status = row["status"]
        if status is None:
            chosen = "error" if row.get("error_message") else "file_complete"
            note("eventType from error_message: status is NULL",
                 f"status is NULL; eventType is '{chosen}', from error_message")
            return chosen
        key = (bytes(status).decode("utf-8", "replace") if isinstance(status, (bytes, bytearray))
               else str(status)).strip().lower()
        return self.statuses.get(key)

    def _text(self, value: Any, column: str, note: Note) -> str | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (bytes, bytearray)):
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                note(f"{column} stored as hex: bytes that are not UTF-8",
                     f"{column} holds bytes that are not UTF-8; stored as hex")
                return "hex:" + bytes(value).hex()
        return str(value)

    def _bounded(self, legacy_id: Any, column: str, value: str | None, note: Note) -> str | None:
        if value is None or column not in self.limits:
            return value
        chars, octets = self.limits[column]
        size = len(value.encode("utf-8"))
        if len(value) <= chars and size <= octets:
            return value
        cut = _cut(value, chars, octets)
        note(f"{column} cut to fit its column",
             f"{column}: {len(value)} characters ({size} bytes), cut to {len(cut)}; legacy row {legacy_id} "
             "holds the whole value")
        return cut

    def _metadata(self, legacy_id: Any, payload: Any, note: Note, changes: list[str]) -> str | None:
        if payload is None and not changes:
            return None
        meta: dict[str, Any] = {}
        if payload is not None:
            meta, kind = payload_metadata(payload)
            if kind is not None:
                self.notes.add(kind, legacy_id)
        if changes:
            meta["coerced"] = list(changes)
        text = orjson.dumps(meta).decode()
        if len(text.encode("utf-8")) <= MAX_METADATA_BYTES:
            return text
        raw = isinstance(payload, (bytes, bytearray, memoryview))
        original = bytes(payload).decode("utf-8", "replace") if raw else str(payload)
        budget = MAX_METADATA_BYTES // 8  # JSON escaping can grow text sixfold
        note("input_payload cut to the metadata bound",
             f"input_payload: {len(original)} characters, cut to {budget} bytes to fit the metadata bound; "
             f"legacy row {legacy_id} holds the whole value")
        meta = {"payload": _cut(original, budget, budget), "payload_text": "cut to the metadata bound",
                "coerced": changes}
        return orjson.dumps(meta).decode()


def _cut(text: str, chars: int, octets: int) -> str:
    """``text`` shortened to at most ``chars`` characters and ``octets`` UTF-8 bytes, ending in a marker
    that says how many characters went (when the column has room for one)."""
    longest = TRUNCATED.format(len(text))
    if len(longest) >= chars or len(longest.encode()) >= octets:
        return text[:chars].encode("utf-8")[:octets].decode("utf-8", "ignore")
    room = len(TRUNCATED.format(len(text) - (chars - len(longest))))  # the marker once the head is known
    head = text[: chars - room].encode("utf-8")[: octets - len(longest.encode())].decode("utf-8", "ignore")
    return head + TRUNCATED.format(len(text) - len(head))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"
