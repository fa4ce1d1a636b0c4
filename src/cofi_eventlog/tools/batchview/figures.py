"""A batch's figures, from what collect.py read and the time now: the dict that the dashboard's batch
page, ``/api/batches/<id>`` and ``report --json`` all show.

Per stage, files are counted from events: an attempt is a ``file_start``; a file that had an error is
followed through all its attempts, so one retried since counts as completed or in flight, not failed.
in flight = attempts − retries − completed − failed: an attempt whose worker died without an outcome
stays in flight. A stage's total is, in order: the largest total its ``progress`` events gave; the
batch's ``total_files`` (first stage); the files the previous stage completed (a pipeline hands on what
it completed); the files seen. Waiting = total − completed − failed − in flight.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import states
from .collect import BatchData, Group
from .error_groups import group_errors
from .times import iso

MIN_SPAN = 1.0  # seconds of events below which no rate is given: it would say nothing
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


def figures(data: BatchData, table: str, *, now: datetime | None = None, quiet_after: float = 60.0) -> dict[str, Any]:
    now = now or datetime.now(timezone.utc)
    by_type: dict[str, int] = defaultdict(int)
    batch_total: int | None = None
    for g in data.groups:
        by_type[g.event_type] += g.events
        if g.event_type == "batch_start" and g.total is not None:
            batch_total = max(batch_total or 0, g.total)
    live = not data.migrated and (now - data.last).total_seconds() <= quiet_after
    stages = _stages(data.groups, batch_total, now, quiet_after, live)
    if data.migrated:  # legacy rows tell when each file ended, not how fast anything ran
        for stage in stages:
            stage["files_per_minute"] = None
    short = any(s["waiting"] or s["in_flight"] for s in stages)
    state = states.batch_state(short=short, said_complete=by_type.get("batch_complete", 0) > 0, live=live,
                               migrated=data.migrated)
    seconds = (data.last - data.first).total_seconds()
    rated = seconds >= MIN_SPAN and not data.migrated
    error_groups, left_off = group_errors(data.errors)
    return {
        "batch": data.batch, "table": table, "now": iso(now), "state": state, "migrated": data.migrated,
        "files": batch_total if batch_total is not None else (stages[0]["total"] if stages else None),
        "files_from": BATCH_START if batch_total is not None else (stages[0]["total_from"] if stages else None),
        "events": data.events, "events_by_type": dict(sorted(by_type.items())),
        "errors": by_type.get("error", 0),
        "progress_pct": _pct(sum(s["completed"] + s["failed"] for s in stages),
                             sum(s["total"] for s in stages)),
        "first_event": iso(data.first), "last_event": iso(data.last), "seconds": round(seconds, 3),
        "quiet_seconds": round(max(0.0, (now - data.last).total_seconds()), 1), "quiet_after": quiet_after,
        "events_per_second": round(data.events / seconds, 1) if rated else None,
        "completions_per_minute": round(by_type.get("file_complete", 0) * 60 / seconds, 1) if rated else None,
        "stages": stages,
        "gpus": _gpus(data.groups, now, quiet_after, live),
        "chart": _chart(data, [s["stage"] for s in stages]),
        "error_groups": error_groups, "error_groups_left_off": left_off, "errors_grouped": len(data.errors),
    }


def _pct(done: int, total: int | None) -> float | None:
    return round(min(100.0, 100.0 * done / total), 1) if total else None


def _stages(groups: list[Group], batch_total: int | None, now: datetime, quiet_after: float,
            live: bool) -> list[dict[str, Any]]:
    found: dict[str, _Stage] = {}
    trails: dict[str, dict[str, _Trail]] = defaultdict(dict)
    for g in groups:
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
        if g.file is not None and g.event_type in ("file_start", "file_complete", "error"):
            trail = trails[g.stage].setdefault(g.file, _Trail(defaultdict(int), {}))
            trail.counts[g.event_type] += g.events
            latest = (g.last, g.last_id)
            trail.latest[g.event_type] = max(trail.latest.get(g.event_type, latest), latest)
    out: list[dict[str, Any]] = []
    for s in sorted(found.values(), key=lambda s: (s.first, s.name)):
        out.append(_stage(s, list(trails[s.name].values()), batch_total, out[-1] if out else None, now,
                          quiet_after, live))
    return out


def _stage(s: _Stage, trails: list[_Trail], batch_total: int | None, previous: dict[str, Any] | None,
           now: datetime, quiet_after: float, live: bool) -> dict[str, Any]:
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
        total, source = max(previous["completed"], seen), PREVIOUS
    done = completed + failed
    waiting = max(0, total - done - in_flight)
    known = source in (PROGRESS, BATCH_START) or (source == PREVIOUS and previous is not None
                                                  and previous["state"] == states.DONE)
    recent = live and (now - s.last).total_seconds() <= quiet_after
    state = states.stage_state(short=bool(waiting or in_flight), said_complete=s.said_complete, total_known=known,
                               recent=recent)
    running = state == states.RUNNING
    minutes = (s.last - s.first).total_seconds() / 60
    rate = done / minutes if minutes * 60 >= MIN_SPAN else None
    return {
        "stage": s.name, "state": state, "total": total, "total_from": source,
        "completed": completed, "failed": failed, "in_flight": in_flight, "waiting": waiting,
        "attempts": s.starts, "retries": max(0, sum(t.counts["file_start"] for t in trails) - len(trails)),
        "errors": s.errors, "progress_pct": _pct(done, total),
        "first_event": iso(s.first), "last_event": iso(s.last), "end": None if running else iso(s.last),
        "seconds": round(((now if running else s.last) - s.first).total_seconds(), 1),
        "files_per_minute": None if rate is None else round(rate, 1),
        "eta_seconds": round((waiting + in_flight) / rate * 60, 1) if running and rate else None,
    }


def _natural(text: str) -> list[Any]:
    """'10.0.0.9' before '10.0.0.10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _gpus(groups: list[Group], now: datetime, quiet_after: float, live: bool) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for g in groups:
        if g.gpu is None:
            continue
        gpu = found.setdefault(g.gpu, {"gpu": g.gpu, "events": 0, "completed": 0, "failed": 0,
                                       "first": g.first, "last": g.last})
        gpu["events"] += g.events
        gpu["completed"] += g.events if g.event_type == "file_complete" else 0
        gpu["failed"] += g.events if g.event_type == "error" else 0
        gpu["first"], gpu["last"] = min(gpu["first"], g.first), max(gpu["last"], g.last)
    out = []
    for gpu in sorted(found.values(), key=lambda x: _natural(x["gpu"])):
        first, last = gpu.pop("first"), gpu.pop("last")
        span = (last - first).total_seconds()
        silent = max(0.0, (now - last).total_seconds())
        out.append({**gpu, "files_per_minute": round(gpu["completed"] * 60 / span, 1) if span >= MIN_SPAN else None,
                    "first_seen": iso(first), "last_seen": iso(last), "quiet_seconds": round(silent, 1),
                    "quiet": live and silent > quiet_after})
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
