"""A progress bar on stderr: redrawn in place on a terminal, a line every few seconds in a log file."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int, *, stream: TextIO | None = None, width: int = 30,
                 every: float = 5.0, quiet: bool = False) -> None:
        self.quiet = quiet
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.every = every
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown = -1
        self._last_line = time.monotonic()

    def line(self) -> str:
        share = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(share * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.label} [{bar}] {self.done}/{self.total} {share:4.0%}"

    def advance(self, count: int) -> None:
        self.done += count
        if self.quiet:
            return
        if self._tty:
            percent = int(self.done * 100 / self.total) if self.total else 100
            if percent != self._shown:
                self._shown = percent
                self.stream.write("\r" + self.line())
                self.stream.flush()
        elif time.monotonic() - self._last_line >= self.every:
            self._last_line = time.monotonic()
            self.stream.write(self.line() + "\n")

    def finish(self) -> None:
        if self.quiet:
            return
        self.stream.write(("\r" if self._tty else "") + self.line() + "\n")
        self.stream.flush()
