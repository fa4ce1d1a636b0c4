"""What a batch or a stage is doing, decided from its figures and its last event, never from a
completion event alone.

A batch:
- completed: it logged ``batch_complete`` with nothing left, or every stage it declared is done.
- running: an event arrived within ``quiet_after`` seconds.
- stalled: quiet for longer than that, with work left (files waiting or in flight, or declared stages not
  done).
- ended short: it said it completed with work left; or quiet for longer than ``ended_after`` with work left:
  the process that ran it is gone.
- unconfirmed: quiet, every file seen has an outcome, but it declared no stages and never logged
  ``batch_complete``: nothing tells whether more stages were to come (a batch dying between two stages
  looks exactly like this).
- migrated: history copied from processing_logs (its newest event was migrated); never running.

A stage: waiting (declared, not begun), running, stalled, done, or ended short (it said it completed with
files waiting or in flight).
"""

from __future__ import annotations

RUNNING, COMPLETED, DONE, ENDED_SHORT, STALLED, MIGRATED, UNCONFIRMED, WAITING = (
    "running", "completed", "done", "ended short", "stalled", "migrated", "unconfirmed", "waiting")
ALERTS = (STALLED, ENDED_SHORT, UNCONFIRMED)  # what report --fail-if-stalled exits 3 for


def stage_state(*, short: bool, said_complete: bool, total_known: bool, recent: bool) -> str:
    if said_complete and short:
        return ENDED_SHORT
    if not short and (said_complete or total_known or not recent):
        return DONE
    return RUNNING if recent else STALLED


def batch_state(*, short: bool, said_complete: bool, declared_done: bool, quiet: float, quiet_after: float,
                ended_after: float, migrated: bool) -> str:
    """``short``: work is left, counting declared stages not begun; ``declared_done``: it declared its
    stages and each is done."""
    if migrated:
        return MIGRATED
    if said_complete:
        return ENDED_SHORT if short else COMPLETED
    if declared_done and not short:
        return COMPLETED
    if quiet <= quiet_after:
        return RUNNING
    if not short:
        return UNCONFIRMED
    return ENDED_SHORT if quiet > ended_after else STALLED
