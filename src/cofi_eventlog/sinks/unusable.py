"""The sink of a logger whose DSN cannot be used: every write fails as an outage would, so the writer
spools the events, and a process with a valid DSN (or ``cofi-eventlog spool replay``) delivers them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .base import Row, SinkError


class UnusableSink:
    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.statements = 0
        self.coerced = 0

    def write(self, rows: Sequence[Row], meanwhile: Callable[[], None] | None = None) -> None:
        raise SinkError(self.reason, transient=True)

    def check(self) -> None:
        raise SinkError(self.reason, transient=True)

    def cluster(self) -> str | None:
        return None

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        pass
