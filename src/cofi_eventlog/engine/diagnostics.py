"""The logger's own warnings: rate-limited, and marked so they never come back in as events.

While a warning is being emitted, ``in_diagnostics()`` is true on that thread, and ``busy()`` is true
for the whole process; the logger refuses (and counts) events made from inside its own warning, for
instance by a logging handler that forwards every record into the event log.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("cofi_eventlog")
_inside = threading.local()
_busy_lock = threading.Lock()
BUSY = [0]  # warnings being emitted now, in any thread: read without the lock


def in_diagnostics() -> bool:
    """True while this thread is emitting one of our warnings."""
    return getattr(_inside, "depth", 0) > 0


def busy() -> bool:
    """True while any thread is emitting one of our warnings."""
    return BUSY[0] > 0


class Warner:
    """At most one warning per kind every ``interval`` seconds, with a count of those held back.

    ``before`` runs before each warning is emitted (the logger uses it to route calls through the
    path that checks for recursion)."""

    def __init__(self, interval: float = 10.0, before: Callable[[], None] | None = None) -> None:
        self.interval = interval
        self._before = before
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str, text: str) -> None:
        self._emit(kind, text, exc_info=False)

    def exception(self, kind: str, text: str) -> None:
        """Like a warning, with the current exception's traceback."""
        self._emit(kind, text, exc_info=True)

    def _emit(self, kind: str, text: str, *, exc_info: bool) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        suffix = f" ({held} similar warnings held back)" if held else ""
        with _busy_lock:
            BUSY[0] += 1
        _inside.depth = getattr(_inside, "depth", 0) + 1
        try:
            if self._before is not None:
                self._before()
            log.warning("%s%s", text, suffix, exc_info=exc_info)
        except Exception:  # a broken handler elsewhere must not break the writer
            pass
        finally:
            _inside.depth -= 1
            with _busy_lock:
                BUSY[0] -= 1


def _reset_after_fork() -> None:
    """A forked child keeps only the forking thread, so only its own warning can be in progress."""
    global _busy_lock
    _busy_lock = threading.Lock()
    BUSY[0] = getattr(_inside, "depth", 0)


os.register_at_fork(after_in_child=_reset_after_fork)
