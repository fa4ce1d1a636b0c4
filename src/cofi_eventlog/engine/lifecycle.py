"""Process hooks: drain at exit (atexit, and multiprocessing's finalizers, which run where atexit
does not), on SIGTERM (see sigterm.py), and start afresh in a forked child."""

from __future__ import annotations

import atexit
import os
import sys
import weakref
from typing import Any, Protocol

from . import sigterm


class Closable(Protocol):
    def close(self, timeout: float | None = None) -> None: ...

    def exit_timeout(self) -> float: ...

    def after_fork_in_child(self) -> None: ...

    def route_through_slow_path(self) -> None: ...


_live: weakref.WeakSet[Any] = weakref.WeakSet()
_hooked_pid = 0


def track(logger: Closable) -> None:
    """Called when a logger starts writing in this process."""
    _live.add(logger)
    _hook_this_process()
    install_sigterm_handler()


def install_sigterm_handler() -> None:
    sigterm.install(close_all)


def _hook_this_process() -> None:
    global _hooked_pid
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
    """Close every logger of this process: each drains for ``timeout`` (default: its own
    ``exit_timeout``), then spools what is left. For an application's own SIGTERM handler."""
    for logger in _snapshot():
        try:
            logger.close(timeout=logger.exit_timeout() if timeout is None else timeout)
        except Exception:  # one broken logger must not stop the others from draining
            pass


def route_all_through_slow_path() -> None:
    """Before one of our warnings is emitted: every logger's next calls check for recursion."""
    for logger in _snapshot():
        logger.route_through_slow_path()


def _after_fork_in_child() -> None:
    for logger in _snapshot():
        logger.after_fork_in_child()
    _live.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
