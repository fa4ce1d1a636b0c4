"""Times as the event table stores them (UTC: MySQL DATETIME, SQLite ISO text) and as people read them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def moment(value: Any) -> datetime | None:
    """createdAt as an aware UTC datetime: MySQL returns a naive one, SQLite its ISO text."""
    if value is None:
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with a Z, so no reader takes it for local time."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stored(value: datetime) -> str:
    """A UTC datetime as both dialects compare it with createdAt: 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def micros(value: datetime) -> int:
    """Microseconds since 1970."""
    delta = value - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def duration(seconds: float | None) -> str:
    """'64d 15h', '2h 03m', '4m 05s', '12.3 s'."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
