"""What a batch or a stage is doing, decided from its figures and its last event, never from a
completion event alone: a batch that logged ``batch_complete`` with files missing ended short.

- ended short: it said it completed (batch_complete / stage_complete), but files are waiting or in flight.
- completed (a batch) / done (a stage): every file expected has an outcome and none is in flight, and
  either it said so, or it has gone quiet, or (a stage) its total came from the pipeline rather than
  from the files seen so far.
- running: otherwise, while events arrive (within the last ``quiet_after`` seconds).
- stalled: quiet for longer than ``quiet_after`` with files waiting or in flight.
- migrated: history copied from processing_logs (its newest event was migrated); never running.
"""

from __future__ import annotations

RUNNING, COMPLETED, DONE, ENDED_SHORT, STALLED, MIGRATED = (
    "running", "completed", "done", "ended short", "stalled", "migrated")


def stage_state(*, short: bool, said_complete: bool, total_known: bool, recent: bool) -> str:
    if said_complete and short:
        return ENDED_SHORT
    if not short and (said_complete or total_known or not recent):
        return DONE
    return RUNNING if recent else STALLED


def batch_state(*, short: bool, said_complete: bool, live: bool, migrated: bool) -> str:
    if migrated:
        return MIGRATED
    if said_complete and short:
        return ENDED_SHORT
    if not short and (said_complete or not live):
        return COMPLETED
    return RUNNING if live else STALLED
