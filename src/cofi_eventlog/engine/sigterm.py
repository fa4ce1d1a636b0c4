"""SIGTERM as a normal way to stop.

Containers, systemd and ``Pool.terminate()`` (so also the end of a ``with Pool()`` block) stop a
process with SIGTERM, whose default action ends it at once: no atexit, no finalizer, the queue lost.
When a logger starts (or ``configure()`` runs) on the main thread and SIGTERM still has its default
action, this handler is installed instead. It raises ``SystemExit(143)`` in the main thread, as
SIGINT raises KeyboardInterrupt: the pipeline stops where it is, its ``finally`` blocks run, and the
exit hooks drain every logger (written, or spooled, within ``exit_timeout``); the process then exits
with status 143, the status a shell gives a process that SIGTERM ended.

Draining runs in the exit hooks, never inside the handler: a handler runs between two bytecodes of
whatever the main thread was doing, possibly inside a lock that a drain would need. If the exit
stalls (a non-daemon thread that never ends, a handler that swallows SystemExit), a watchdog thread
drains after the loggers' ``exit_timeout`` and ends the process itself. A SIGTERM that arrives while
an exit is already draining lets that drain finish.

A handler the application installed is never replaced; it can call ``cofi_eventlog.close_all()``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

EXIT_STATUS = 128 + signal.SIGTERM

_received = False
_draining = False  # an exit hook is closing the loggers now
_wake_fd = -1  # the watchdog's pipe, in the process that made it
_watch_pid = 0


def install(drain: Callable[[], None], grace: Callable[[], float]) -> None:
    """Take SIGTERM if it has its default action (only the main thread may); arm the watchdog."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        elif current is not _on_sigterm:
            return  # the application's own handler, or SIG_IGN
    except (ValueError, OSError):  # an interpreter without signals
        return
    _arm_watchdog(drain, grace)


def draining(active: bool) -> None:
    global _draining
    _draining = active


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received:
        return
    _received = True
    if _watch_pid == os.getpid():
        try:
            os.write(_wake_fd, b"!")  # no lock taken: safe whatever the main thread was in
        except OSError:
            pass
    if not _draining:
        raise SystemExit(EXIT_STATUS)


def _arm_watchdog(drain: Callable[[], None], grace: Callable[[], float]) -> None:
    global _wake_fd, _watch_pid
    if _watch_pid == os.getpid():
        return
    read_fd, _wake_fd = os.pipe()
    _watch_pid = os.getpid()

    def watch() -> None:
        try:
            os.read(read_fd, 1)
        except OSError:
            return
        time.sleep(grace())
        drain()  # the exit has not finished by now: drain from here and end the process
        os._exit(EXIT_STATUS)

    threading.Thread(target=watch, name="cofi-eventlog-sigterm", daemon=True).start()


def _after_fork_in_child() -> None:
    """The watchdog thread stays behind in the parent; the child arms its own when it logs."""
    global _received, _watch_pid
    _received = False
    _watch_pid = 0


os.register_at_fork(after_in_child=_after_fork_in_child)
