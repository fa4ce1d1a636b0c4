"""Counters. Callers bump theirs through itertools.count, whose ``next`` is atomic under the GIL;
the writer thread owns the plain integers."""

from __future__ import annotations

import itertools
from dataclasses import dataclass


class AtomicCounter:
    def __init__(self) -> None:
        self._count = itertools.count()
        self.add = self._count.__next__  # returns the value before the increment

    @property
    def value(self) -> int:
        return int(repr(self._count)[6:-1])  # "count(N)": reading without incrementing


@dataclass
class WriterStats:
    written: int = 0
    flushes: int = 0
    retries: int = 0
    adopted: int = 0  # events written from journals other processes (or closed loggers) left
    for_others: int = 0  # events of other live processes written as the host's shared writer
    took_over: int = 0  # times this process became the shared writer
    too_many_connections: int = 0  # writes refused with 1040: waited out like any outage
    dead_lettered: int = 0
    coerced: int = 0
    dropped_dead_letter: int = 0  # refused by the database, and the dead-letter file could not keep them
    last_error: str | None = None
    flush_seconds_last: float = 0.0
    flush_seconds_max: float = 0.0
    flush_seconds_total: float = 0.0
    timed_writes: int = 0

    def timed(self, seconds: float) -> None:
        """One successful sink write took ``seconds``."""
        self.flush_seconds_last = seconds
        self.flush_seconds_total += seconds
        self.flush_seconds_max = max(self.flush_seconds_max, seconds)
        self.timed_writes += 1

    @property
    def flush_seconds_avg(self) -> float:
        return self.flush_seconds_total / self.timed_writes if self.timed_writes else 0.0
