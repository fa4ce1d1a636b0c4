"""How one ``processing_logs`` row becomes one ``batchExecutionLog`` row."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

import orjson

from ...sinks import iso_utc

# Bytes 8..11 of every migrated eventId; verification counts migrated rows by it.
MARKER = b"PLOG"
STATUS_EVENTS = {"failed": "error", "error": "error", "success": "file_complete"}
_EPOCH = datetime(1970, 1, 1)


class MigrationError(Exception):
    """The migration cannot go on; the message says why and what to do."""


def migrated_event_id(legacy_id: int, created_us: int | None) -> bytes:
    """created_at in ns (8 bytes; 0 when unknown) | b"PLOG" | the legacy id (4 bytes).

    The same row always gets the same id, so with duplicates skipped a re-run adds nothing, and ids sort
    by created_at like live ones. A live id is time_ns | random node (4) | call sequence (4): it equals a
    migrated id only if a logger drew exactly b"PLOG" as its node (one in 2**32 loggers), logged at the
    very nanosecond of a legacy row and at a sequence number equal to that row's id.
    """
    if not 0 <= legacy_id <= 0xFFFFFFFF:
        raise MigrationError(f"legacy id {legacy_id} does not fit the 4 bytes the eventId keeps for it")
    time_ns = (created_us or 0) * 1000
    return time_ns.to_bytes(8, "big") + MARKER + legacy_id.to_bytes(4, "big")


def micros_utc(value: Any) -> int | None:
    """created_at as µs since the epoch, UTC; None when absent or unreadable. Naive values are UTC:
    the connection reads TIMESTAMP columns in UTC, and SQLite's 'now' is UTC."""
    if value is None:
        return None
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
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def metadata_of(payload: Any) -> tuple[str | None, bool]:
    """input_payload → metadata["payload"], where live ``file_error(payload=...)`` events keep theirs too, so
    one JSON path serves old and new rows: parsed when it is JSON, else as text. Returns (metadata, was_json)."""
    if payload is None:
        return None, True
    try:
        text = _text(payload)
    except UnicodeDecodeError:
        return orjson.dumps({"payload": "hex:" + bytes(payload).hex()}).decode(), False
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return orjson.dumps({"payload": text}).decode(), False
    return orjson.dumps({"payload": value}).decode(), True


class RowMapper:
    """Maps legacy rows (dicts) to event rows and counts every assumption it had to make."""

    def __init__(self, statuses: dict[str, str], run_micros: int, limits: dict[str, tuple[int, int]]) -> None:
        self.statuses = statuses
        self.run_micros = run_micros
        self.limits = limits  # column → (characters, bytes), MySQL only
        self.notes: Counter[str] = Counter()

    def event_type(self, row: dict[str, Any]) -> str:
        status = row.get("status")
        if status is None:
            self.notes["no status: 'error' when error_message is set, else 'file_complete'"] += 1
            return "error" if row.get("error_message") else "file_complete"
        key = _text(status).strip().lower()
        if key not in self.statuses:
            raise MigrationError(f"legacy row id={row['id']}: status {status!r} has no event type; "
                                 "add --map-status VALUE=EVENT_TYPE")
        return self.statuses[key]

    def map(self, row: dict[str, Any]) -> tuple[Any, ...]:
        try:
            return self._map(row)
        except UnicodeDecodeError:
            raise MigrationError(f"legacy row id={row['id']}: a text column holds bytes that are not UTF-8") from None

    def _map(self, row: dict[str, Any]) -> tuple[Any, ...]:
        legacy_id = int(row["id"])
        created = micros_utc(row.get("created_at"))
        if created is None:
            self.notes["created_at missing or unreadable: eventId orders by id, createdAt is the run's time"] += 1
        metadata, was_json = metadata_of(row.get("input_payload"))
        if not was_json:
            self.notes["input_payload is not JSON: kept as text under metadata.payload"] += 1
        batch = row.get("batch_id")
        if batch is None or _text(batch) == "":
            raise MigrationError(f"legacy row id={legacy_id}: batch_id is empty; batchExecutionLog needs one")
        values = {
            "batchId": _text(batch), "stage": _opt(row.get("stage_name")), "eventType": self.event_type(row),
            "fileName": _opt(row.get("call_id")), "message": _opt(row.get("error_message")), "metadata": metadata,
        }
        for column, value in values.items():
            self._check_fits(legacy_id, column, value)
        return (migrated_event_id(legacy_id, created), values["batchId"], values["stage"], values["eventType"],
                values["fileName"], values["message"], None, None, None, values["metadata"],
                iso_utc(created if created is not None else self.run_micros))

    def _check_fits(self, legacy_id: int, column: str, value: str | None) -> None:
        if value is None or column not in self.limits:
            return
        chars, octets = self.limits[column]
        size = len(value.encode("utf-8"))
        if len(value) > chars or size > octets:
            raise MigrationError(f"legacy row id={legacy_id}: {column} is {len(value)} characters ({size} bytes), "
                                 f"more than the target column holds ({chars} characters, {octets} bytes); "
                                 "shorten it in the legacy table or widen the column, then run again")


def _text(value: Any) -> str:
    return bytes(value).decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def _opt(value: Any) -> str | None:
    return None if value is None else _text(value)
