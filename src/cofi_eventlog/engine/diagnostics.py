"""The logger's own warnings: rate-limited, and marked so they never come back in as events."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("cofi_eventlog")
_inside = threading.local()


def in_diagnostics() -> bool:
    """True while this thread is emitting one of our warnings; EventLogHandler ignores such records."""
    return getattr(_inside, "active", False)


class Warner:
    """At most one warning per kind every ``interval`` seconds, with a count of those held back."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str, text: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        suffix = f" ({held} similar warnings held back)" if held else ""
        _inside.active = True
        try:
            log.warning("%s%s", text, suffix)
        except Exception:  # a broken handler elsewhere must not break the writer
            pass
        finally:
            _inside.active = False
