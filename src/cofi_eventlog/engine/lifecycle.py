"""Process hooks: write what is left at exit, and start afresh in a forked child.

Nothing here is needed for safety — every event is in a journal before its call returns, and a
journal outlives its process — but writing at exit (atexit, and multiprocessing's finalizers, which run
where atexit does not) spares the next process that work. The library installs no signal handler: an
application that wants its loggers written out on SIGTERM calls :func:`close_all` in its own.
"""

from __future__ import annotations

import atexit
import os
import sys
import weakref
from typing import Any, Protocol


class Closable(Protocol):
    def close(self, timeout: float | None = None) -> None: ...

    def exit_timeout(self) -> float: ...

    def forget_parent(self) -> None: ...


_live: weakref.WeakSet[Any] = weakref.WeakSet()
_hooked_pid = 0


def track(logger: Closable) -> None:
    """Called when a logger's engine starts in this process."""
    global _hooked_pid
    _live.add(logger)
    if _hooked_pid == os.getpid():
        return
    _hooked_pid = os.getpid()
    atexit.register(close_all)
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:  # workers leave through os._exit, skipping atexit; this still runs
        mp_util.Finalize(None, close_all, exitpriority=100)


def _snapshot() -> list[Any]:
    """The live loggers; another thread may start one while we look."""
    while True:
        try:
            return list(_live)
        except RuntimeError:  # the set changed size during iteration
            continue


def close_all(timeout: float | None = None) -> None:
    """Close every logger of this process: each writes for ``timeout`` (default: its own
    ``exit_timeout``); what is left stays in its journal for the next process. For an application's own
    SIGTERM handler, or any shutdown path of its own."""
    for logger in _snapshot():
        try:
            logger.close(timeout=logger.exit_timeout() if timeout is None else timeout)
        except Exception:  # one broken logger must not stop the others
            pass


def _after_fork_in_child() -> None:
    """The child keeps none of its parent's journals, connections or threads; each engine starts afresh
    on its first call there (and is tracked again, for the child's own exit)."""
    for logger in _snapshot():
        logger.forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)
