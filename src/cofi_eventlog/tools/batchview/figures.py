"""A batch's figures, from what collect.py read and the time now: the dict that the dashboard's batch
page, ``/api/batches/<id>`` and ``report --json`` all show.

Per stage, files are counted from events: an attempt is a ``file_start``; a file that had an error is
followed through all its attempts, so one retried since counts as completed or in flight, not failed.
in flight = attempts − retries − completed − failed: an attempt whose worker died without an outcome
stays in flight. A stage's total is, in order: the largest total its ``progress`` events gave; the
batch's ``total_files`` (first stage); the files the previous stage completed (a pipeline hands on what
it completed); the files seen. Waiting = total − completed − failed − in flight.

Stages the batch declared (``batch_start`` metadata ``stages``) are all shown, those not begun as waiting
with the files the stage before hands on, so progress is over the whole batch. Without declared stages
progress is over the stages so far, and never 100% before ``batch_complete``. The ETA comes from the
outcomes of the last RECENT_SECONDS (at least two chart slots), and is withheld while a stage makes no
progress: no outcome for SILENT_FACTOR times the recent gap between two (a GPU hung on the last files).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import states
from .collect import BatchData, Group
from .error_groups import group_errors
from .inflight import FILE_EVENTS, Attempt, open_counts
from .times import iso

MIN_SPAN = 1.0  # seconds of events below which no rate is given: it would say nothing
ENDED_FACTOR = 10  # quiet this many times --quiet-after with work left: the batch's process is gone
RECENT_SECONDS = 300.0  # the ETA's window of recent progress
# an attempt is stuck past STUCK_FACTOR times its stage's usual time per file (at least STUCK_MIN s), or past
# --quiet-after; a stage makes no progress when no outcome came for SILENT_FACTOR times its recent gap between
# two (at least SILENT_MIN s), and its ETA is then withheld
STUCK_FACTOR, STUCK_MIN = 10, 10.0
SILENT_FACTOR, SILENT_MIN = 5, 10.0
OUTCOMES = ("file_complete", "error")
DECLARED, SO_FAR = "declared stages", "stages so far"
PROGRESS, BATCH_START, PREVIOUS, SEEN = "progress events", "batch_start", "previous stage", "files seen"


@dataclass
class _Stage:
    name: str
    first: datetime
    last: datetime
    starts: int = 0
    completed: int = 0
    errors: int = 0
    file_errors: int = 0
    total: int | None = None
    said_complete: bool = False
    last_outcome: datetime | None = None
    slots: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # outcomes per chart slot


@dataclass
class _Trail:
    """One file that had an error, through all its attempts in one stage."""

    counts: dict[str, int]
    latest: dict[str, tuple[datetime, bytes]]  # per event type: its latest createdAt and eventId

    def outcome(self) -> str:
        """The file's latest step. Within one microsecond the eventIds tell the order (their first bytes are
        the call's time in ns, then the logger's sequence); only were they equal would an outcome win over a
        start, a completion over an error."""
        order = {"file_complete": 2, "error": 1, "file_start": 0}
        kind = max(self.latest, key=lambda k: (self.latest[k], order[k]))
        return {"file_complete": "completed", "error": "failed", "file_start": "in flight"}[kind]


def figures(data: BatchData, table: str, *, now: datetime | None = None, quiet_after: float = 60.0,
            ended_after: float | None = None) -> dict[str, Any]:
    now = now or datetime.now(timezone.utc)
    ended_after = ENDED_FACTOR * quiet_after if ended_after is None else ended_after
    by_type: dict[str, int] = defaultdict(int)
    batch_total: int | None = None
    for g in data.groups:
        by_type[g.event_type] += g.events
        if g.event_type == "batch_start" and g.total is not None:
            batch_total = max(batch_total or 0, g.total)
    quiet = max(0.0, (now - data.last).total_seconds())
    live = not data.migrated and quiet <= quiet_after
    stages = _stages(data, batch_total, now, quiet_after, live)
    if data.migrated:  # legacy rows tell when each file ended, not how fast anything ran
        for stage in stages:
            stage["files_per_minute"] = stage["recent_files_per_minute"] = None
    short = any(s["waiting"] or s["in_flight"] for s in stages)
    declared_done = bool(data.declared) and all(s["state"] == states.DONE for s in stages if s["declared"])
    state = states.batch_state(short=short, said_complete=by_type.get("batch_complete", 0) > 0,
                               declared_done=declared_done, quiet=quiet, quiet_after=quiet_after,
                               ended_after=ended_after, migrated=data.migrated)
    seconds = (data.last - data.first).total_seconds()
    rated = seconds >= MIN_SPAN and not data.migrated
    error_groups, left_off = group_errors(data.errors)
    pct = _pct(sum(s["completed"] + s["failed"] for s in stages), sum(s["total"] or 0 for s in stages))
    if pct is not None and state not in (states.COMPLETED, states.MIGRATED):
        pct = min(pct, 99.9)  # only the batch saying so, or its declared stages done, make it 100%
    return {
        "batch": data.batch, "table": table, "now": iso(now), "state": state, "migrated": data.migrated,
        "files": batch_total if batch_total is not None else (stages[0]["total"] if stages else None),
        "files_from": BATCH_START if batch_total is not None else (stages[0]["total_from"] if stages else None),
        "events": data.events, "events_by_type": dict(sorted(by_type.items())),
        "errors": by_type.get("error", 0),
        "progress_pct": pct, "progress_of": DECLARED if data.declared else SO_FAR,
        "declared_stages": data.declared,
        "first_event": iso(data.first), "last_event": iso(data.last), "seconds": round(seconds, 3),
        "quiet_seconds": round(quiet, 1), "quiet_after": quiet_after, "ended_after": ended_after,
        "events_per_second": round(data.events / seconds, 1) if rated else None,
        "completions_per_minute": round(by_type.get("file_complete", 0) * 60 / seconds) if rated else None,
        "stages": stages,
        "gpus": _gpus(data, now, quiet_after),
        "chart": _chart(data, [s["stage"] for s in stages if s["first_event"] is not None]),
        "error_groups": error_groups, "error_groups_left_off": left_off, "errors_grouped": len(data.errors),
    }


def _pct(done: int, total: int | None) -> float | None:
    return round(min(100.0, 100.0 * done / total), 1) if total else None


def _stages(data: BatchData, batch_total: int | None, now: datetime, quiet_after: float,
            live: bool) -> list[dict[str, Any]]:
    found: dict[str, _Stage] = {}
    trails: dict[str, dict[str, _Trail]] = defaultdict(dict)
    for g in data.groups:
        if g.stage is None:
            continue
        s = found.get(g.stage)
        if s is None:
            s = found[g.stage] = _Stage(g.stage, g.first, g.last)
        s.first, s.last = min(s.first, g.first), max(s.last, g.last)
        if g.event_type == "file_start":
            s.starts += g.events
        elif g.event_type == "file_complete":
            s.completed += g.events
        elif g.event_type == "error":
            s.errors += g.events
            s.file_errors += g.events - g.nameless
        elif g.event_type == "progress" and g.total is not None:
            s.total = max(s.total or 0, g.total)
        elif g.event_type == "stage_complete":
            s.said_complete = True
        if g.event_type in OUTCOMES:
            s.last_outcome = g.last if s.last_outcome is None else max(s.last_outcome, g.last)
            if g.slot is not None:
                s.slots[g.slot] += g.events
        if g.file is not None and g.event_type in FILE_EVENTS:
            trail = trails[g.stage].setdefault(g.file, _Trail(defaultdict(int), {}))
            trail.counts[g.event_type] += g.events
            latest = (g.last, g.last_id)
            trail.latest[g.event_type] = max(trail.latest.get(g.event_type, latest), latest)
    declared = data.declared or []
    order = [*declared, *sorted((n for n in found if n not in declared), key=lambda n: (found[n].first, n))]
    window = max(RECENT_SECONDS, 2.0 * data.slot_seconds)
    out: list[dict[str, Any]] = []
    for name in order:
        previous = out[-1] if out else None
        if name not in found:
            out.append(_waiting(name, batch_total, previous))
            continue
        stage = _stage(found[name], list(trails[name].values()), batch_total, previous, now, quiet_after, live,
                       window, data.slot_seconds)
        stage["declared"] = name in declared
        out.append(stage)
    return out


def _waiting(name: str, batch_total: int | None, previous: dict[str, Any] | None) -> dict[str, Any]:
    """A declared stage not begun: the files the stage before hands on (all of them, less its failures)."""
    if previous is None:
        total, source = batch_total, BATCH_START
    else:
        total, source = (None if previous["total"] is None else previous["total"] - previous["failed"]), PREVIOUS
    return {"stage": name, "state": states.WAITING, "declared": True, "total": total, "total_from": source,
            "completed": 0, "failed": 0, "in_flight": 0, "waiting": total or 0, "attempts": 0, "retries": 0,
            "errors": 0, "progress_pct": 0.0 if total else None, "first_event": None, "last_event": None,
            "end": None, "seconds": None, "files_per_minute": None, "recent_files_per_minute": None,
            "eta_seconds": None, "no_progress_seconds": None}


def _stage(s: _Stage, trails: list[_Trail], batch_total: int | None, previous: dict[str, Any] | None,
           now: datetime, quiet_after: float, live: bool, window: float, slot_seconds: int) -> dict[str, Any]:
    # files never in error, from counts; files with an error, one by one
    starts = s.starts - sum(t.counts["file_start"] for t in trails)
    completed = s.completed - sum(t.counts["file_complete"] for t in trails)
    failed = s.file_errors - sum(t.counts["error"] for t in trails)  # errors of files not followed
    in_flight = max(0, starts - completed - failed)
    seen = max(starts, completed + failed) + len(trails)
    outcomes = [t.outcome() for t in trails]
    completed += outcomes.count("completed")
    failed += outcomes.count("failed")
    in_flight += outcomes.count("in flight")
    if s.total is not None:
        total, source = s.total, PROGRESS
    elif previous is None:
        total, source = (batch_total, BATCH_START) if batch_total is not None else (seen, SEEN)
    else:
        handed = previous["completed"] if previous["state"] != states.WAITING else 0
        total, source = max(handed, seen), PREVIOUS
    done = completed + failed
    waiting = max(0, total - done - in_flight)
    known = source in (PROGRESS, BATCH_START) or (source == PREVIOUS and previous is not None
                                                  and previous["state"] == states.DONE)
    recent = live and (now - s.last).total_seconds() <= quiet_after
    state = states.stage_state(short=bool(waiting or in_flight), said_complete=s.said_complete, total_known=known,
                               recent=recent)
    ongoing = state in (states.RUNNING, states.STALLED)
    minutes = (s.last - s.first).total_seconds() / 60
    rate = done / minutes if minutes * 60 >= MIN_SPAN else None
    since = now.timestamp() - window
    recent_done = sum(n for slot, n in s.slots.items() if slot + slot_seconds > since)
    span = min(window, (now - s.first).total_seconds())
    recent_rate = recent_done * 60 / span if span >= MIN_SPAN else None
    stopped = s.last_outcome or s.first
    silent = (now - stopped).total_seconds()
    gap = 60 / recent_rate if recent_rate else None
    progressing = gap is not None and silent <= max(SILENT_FACTOR * gap, SILENT_MIN)
    return {
        "stage": s.name, "state": state, "total": total, "total_from": source,
        "completed": completed, "failed": failed, "in_flight": in_flight, "waiting": waiting,
        "attempts": s.starts, "retries": max(0, sum(t.counts["file_start"] for t in trails) - len(trails)),
        "errors": s.errors, "progress_pct": _pct(done, total),
        "first_event": iso(s.first), "last_event": iso(s.last), "end": None if ongoing else iso(s.last),
        "seconds": round(((now if ongoing else s.last) - s.first).total_seconds(), 1),
        "files_per_minute": None if rate is None else round(rate),
        "recent_files_per_minute": round(recent_rate) if ongoing and recent_rate is not None else None,
        "eta_seconds": round((waiting + in_flight) / recent_rate * 60, 1)
        if state == states.RUNNING and recent_rate and progressing else None,
        "no_progress_seconds": round(silent, 1) if ongoing and not progressing else None,
    }


def _natural(text: str) -> list[Any]:
    """'10.0.0.9' before '10.0.0.10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _usual_seconds(groups: list[Group]) -> dict[str | None, float]:
    """Per stage, the usual time per file: the median over its GPUs of the time from their first start to
    their last outcome in it, per outcome (an attempt still open does not stretch it)."""
    per: dict[tuple[str | None, str], list[Any]] = {}
    for g in groups:
        if g.gpu is None or g.event_type not in FILE_EVENTS:
            continue
        entry = per.setdefault((g.stage, g.gpu), [None, None, 0])
        if g.event_type == "file_start":
            entry[0] = g.first if entry[0] is None else min(entry[0], g.first)
        else:
            entry[1] = g.last if entry[1] is None else max(entry[1], g.last)
            entry[2] += g.events
    times: dict[str | None, list[float]] = defaultdict(list)
    for (stage, _), (first, last, outcomes) in per.items():
        if outcomes >= 2 and first is not None and last is not None and last > first:
            times[stage].append((last - first).total_seconds() / outcomes)
    return {stage: sorted(v)[len(v) // 2] for stage, v in times.items()}


def _gpus(data: BatchData, now: datetime, quiet_after: float) -> list[dict[str, Any]]:
    """Hosts that logged file events (an orchestrator logging only batch, stage or progress events is none)."""
    found: dict[str, dict[str, Any]] = {}
    for g in data.groups:
        if g.gpu is None:
            continue
        gpu = found.setdefault(g.gpu, {"gpu": g.gpu, "events": 0, "completed": 0, "failed": 0, "files": 0,
                                       "first": g.first, "last": g.last})
        gpu["events"] += g.events
        gpu["completed"] += g.events if g.event_type == "file_complete" else 0
        gpu["failed"] += g.events if g.event_type == "error" else 0
        gpu["files"] += g.events - g.nameless if g.event_type in FILE_EVENTS else 0
        gpu["first"], gpu["last"] = min(gpu["first"], g.first), max(gpu["last"], g.last)
    counts = open_counts(data.groups)
    usual = _usual_seconds(data.groups)
    attempts: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in data.attempts:
        attempts[attempt.gpu].append(attempt)
    out = []
    for gpu in sorted((g for g in found.values() if g.pop("files")), key=lambda x: _natural(x["gpu"])):
        first, last = gpu.pop("first"), gpu.pop("last")
        span = (last - first).total_seconds()
        open_ = sorted(attempts.get(gpu["gpu"], []), key=lambda a: a.started)
        oldest = open_[0] if open_ else None
        age = None if oldest is None else max(0.0, (now - oldest.started).total_seconds())
        limit = usual.get(oldest.stage) if oldest is not None else None
        stuck = age is not None and not data.migrated and (
            age > quiet_after or (limit is not None and age > max(STUCK_FACTOR * limit, STUCK_MIN)))
        in_flight = counts.get(gpu["gpu"], 0)
        current = open_[-1] if open_ else None
        out.append({**gpu, "files_per_minute": round(gpu["completed"] * 60 / span) if span >= MIN_SPAN else None,
                    "first_seen": iso(first), "last_seen": iso(last),
                    "quiet_seconds": round(max(0.0, (now - last).total_seconds()), 1),
                    "in_flight": in_flight, "oldest_in_flight_seconds": None if age is None else round(age, 1),
                    "current": None if current is None else {"file": current.file, "stage": current.stage,
                                                             "started": iso(current.started)},
                    "usual_seconds_per_file": None if limit is None else round(limit, 2),
                    "stuck": stuck, "state": "stuck" if stuck else "working" if in_flight else "idle"})
    return out


def _chart(data: BatchData, stages: list[str]) -> dict[str, Any]:
    """Completions and errors per time slot and stage, over the batch's window."""
    width = data.slot_seconds
    start = int(data.first.timestamp()) // width * width
    slots = int(data.last.timestamp()) // width - start // width + 1
    series: dict[str | None, dict[str, list[int]]] = {}
    for name in [*stages, None]:
        series[name] = {"completed": [0] * slots, "errors": [0] * slots}
    for g in data.groups:
        if g.slot is None or g.event_type not in ("file_complete", "error"):
            continue
        index = (g.slot - start) // width
        if 0 <= index < slots and g.stage in series:
            series[g.stage]["completed" if g.event_type == "file_complete" else "errors"][index] += g.events
    return {"slot_seconds": width, "start": iso(datetime.fromtimestamp(start, timezone.utc)), "slots": slots,
            "series": [{"stage": name, **values} for name, values in series.items()
                       if name is not None or any(values["errors"]) or any(values["completed"])]}
