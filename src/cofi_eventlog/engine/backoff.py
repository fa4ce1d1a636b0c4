"""Exponential backoff with full jitter, so that many workers do not reconnect in step."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first: float = 0.05, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        """The wait before the next attempt: uniform between ``first`` and a ceiling that doubles with
        each failure up to ``cap``."""
        ceiling = min(self.cap, self.first * (2 ** min(self.failures, 30)))
        self.failures += 1
        return random.uniform(self.first, max(self.first, ceiling))

    def reset(self) -> None:
        self.failures = 0
