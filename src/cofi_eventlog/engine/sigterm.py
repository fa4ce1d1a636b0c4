"""SIGTERM as a normal way to stop.

Containers, systemd and ``Pool.terminate()`` (so also the end of a ``with Pool()`` block) stop a
process with SIGTERM, whose default action ends it at once: no atexit, no finalizer, the queue lost.
When a logger starts (or ``configure()`` runs) on the main thread and SIGTERM still has its default
action, the library takes SIGTERM instead: a watchdog thread closes every logger (each writes, or
spools, what it holds within its ``exit_timeout``), then ends the process with status 143, the status
a shell gives a process that SIGTERM ended.

The watchdog does the work, not a handler on the main thread: the main thread is left alone, wherever
it was (in a lock, in multiprocessing's own exit, in a C call that would not notice a Python handler
for a long time), so nothing it was doing can deadlock the drain or be cut short by it. The watchdog is
woken by the C-level signal handler itself (``signal.set_wakeup_fd``) where the application has not
taken that for itself, as asyncio does; else by the Python-level handler. A call made while the loggers
close is spooled to disk for the next process, not dropped.

A handler the application installed is never replaced; it can call ``cofi_eventlog.close_all()``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

EXIT_STATUS = 128 + signal.SIGTERM

_pipe: tuple[int, int] | None = None  # the watchdog's (read, write) ends, in the process that made them
_wakeup_is_ours = False  # the C-level handler writes each signal's number to our pipe (set_wakeup_fd)


def install(drain: Callable[[], None]) -> None:
    """Take SIGTERM if it has its default action (only the main thread may); arm the watchdog."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        elif current is not _on_sigterm:
            return  # the application's own handler, or SIG_IGN
        _arm_watchdog(drain)
    except (ValueError, OSError):  # an interpreter without signals
        return


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Keeps SIGTERM from ending the process at once; the watchdog sees to the rest."""
    if _pipe is not None and not _wakeup_is_ours:  # else the C-level handler has woken the watchdog already
        try:
            os.write(_pipe[1], bytes([signal.SIGTERM]))
        except OSError:
            pass


# Signals a process is sent from outside. The library's own threads block them, so that the kernel delivers
# them to the main thread: a signal delivered to another thread does not interrupt a main thread blocked
# in a system call (a Pool worker waiting for its next task), and Python runs the handler only there.
OUTSIDE_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                   signal.SIGALRM, signal.SIGCHLD}


def library_thread() -> None:
    """Called first thing on each of the library's threads (see OUTSIDE_SIGNALS)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, OUTSIDE_SIGNALS)


def _arm_watchdog(drain: Callable[[], None]) -> None:
    global _pipe, _wakeup_is_ours
    if _pipe is not None:
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    _pipe = (read_fd, write_fd)
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _wakeup_is_ours = previous == -1
    if not _wakeup_is_ours:
        signal.set_wakeup_fd(previous)

    def watch() -> None:
        library_thread()
        try:
            while signal.SIGTERM not in os.read(read_fd, 512):  # other signals' numbers pass by
                pass
        except OSError:
            return
        try:
            drain()
        finally:
            os._exit(EXIT_STATUS)

    threading.Thread(target=watch, name="cofi-eventlog-sigterm", daemon=True).start()


def _after_fork_in_child() -> None:
    """A forked child starts with SIGTERM's default action (nothing of its own to drain yet; its first
    logger installs the handler again) and without the parent's watchdog, whose pipe it lets go."""
    global _pipe, _wakeup_is_ours
    if _pipe is None:
        return
    if _wakeup_is_ours:
        signal.set_wakeup_fd(-1)
    for fd in _pipe:
        os.close(fd)
    _pipe, _wakeup_is_ours = None, False
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_after_fork_in_child)
