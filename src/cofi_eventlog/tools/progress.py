"""The tools' progress bar on stderr: redrawn in place on a terminal, a plain line every few seconds
when stderr is a file, so long runs leave a readable log."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int, *, unit: str = "", stream: TextIO | None = None, width: int = 30,
                 every: float = 5.0, quiet: bool = False) -> None:
        self.label = label
        self.total = max(total, 0)
        self.unit = f" {unit}" if unit else ""
        self.done = 0
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.every = every
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._started = time.monotonic()
        self._drawn = float("-inf")
        self._last_line = self._started

    def line(self) -> str:
        share = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(share * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.monotonic() - self._started
        return f"{self.label} [{bar}] {share:4.0%} {self.done:,}/{self.total:,}{self.unit} {elapsed:6.1f} s"

    def update(self, done: int) -> None:
        """Show ``done`` of the total: at most ten redraws a second on a terminal."""
        self.done = done
        if self.quiet:
            return
        now = time.monotonic()
        if self._tty:
            if now - self._drawn >= 0.1:
                self._drawn = now
                self.stream.write("\r" + self.line() + "\x1b[K")
                self.stream.flush()
        elif now - self._last_line >= self.every:
            self._last_line = now
            self.stream.write(self.line() + "\n")

    def advance(self, count: int) -> None:
        self.update(self.done + count)

    def finish(self, summary: str | None = None) -> None:
        if self.quiet:
            return
        self.stream.write(("\r\x1b[K" if self._tty else "") + (summary or self.line()) + "\n")
        self.stream.flush()
