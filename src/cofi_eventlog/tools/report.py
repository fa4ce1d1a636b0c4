"""``cofi-eventlog report``: what the dashboard shows for one batch, from batchExecutionLog alone.

Per stage: files started, completed and failed (distinct file names, so a retried file counts once
per outcome) and progress, the share of the stage's files that reached an outcome. The stage's file
count is its latest ``progress`` event's total, else the batch's ``total_files``, else the files
started. Then errors and their most frequent messages, counts per GPU, the first and last event and
the throughput between them.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from ..database import DEFAULT_TABLE, Database
from ..sinks import SinkError

FILE_EVENTS = {"file_start": "started", "file_complete": "completed", "error": "failed"}


def _time(value: Any) -> datetime | None:
    """createdAt as a datetime: MySQL returns one, SQLite its ISO text."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def latest_batch(db: Database, table: str) -> str | None:
    """The batch of the newest event; eventIds are time-ordered, so this reads one index entry."""
    found = db.scalar(f"SELECT batchId FROM {db.name(table)} ORDER BY eventId DESC LIMIT 1")
    return None if found is None else str(found)


def build(db: Database, table: str, batch: str, *, top: int = 5) -> dict[str, Any] | None:
    """The report as plain data; None when the batch has no events."""
    t = db.name(table)
    count, first, last = db.fetchall(f"SELECT COUNT(*), MIN(createdAt), MAX(createdAt) FROM {t} "
                                     "WHERE batchId = %s", (batch,))[0]
    if not count:
        return None
    first_at, last_at = _time(first), _time(last)
    seconds = (last_at - first_at).total_seconds() if first_at and last_at else 0.0
    stages = _stages(db, t, batch)
    totals: dict[str, int] = {}
    for etype, n in db.fetchall(f"SELECT eventType, COUNT(*) FROM {t} WHERE batchId = %s GROUP BY eventType",
                                (batch,)):
        totals[str(etype)] = int(n)
    top_errors = [{"message": m, "count": int(n)} for m, n in db.fetchall(
        f"SELECT message, COUNT(*) FROM {t} WHERE batchId = %s AND eventType = 'error' "
        f"GROUP BY message ORDER BY COUNT(*) DESC, message LIMIT {int(top)}", (batch,))]
    completed = totals.get("file_complete", 0)
    return {
        "batch": batch, "table": table, "events": int(count), "events_by_type": totals,
        "total_files": db.scalar(f"SELECT MAX(total) FROM {t} WHERE batchId = %s AND eventType = 'batch_start'",
                                 (batch,)),
        "stages": stages,
        "errors": totals.get("error", 0), "top_errors": top_errors,
        "gpus": _gpus(db, t, batch),
        "first_event": first_at.isoformat(sep=" ") if first_at else None,
        "last_event": last_at.isoformat(sep=" ") if last_at else None,
        "seconds": seconds,
        "events_per_second": round(count / seconds, 1) if seconds > 0 else None,
        "files_completed_per_second": round(completed / seconds, 1) if seconds > 0 else None,
    }


def _stages(db: Database, t: str, batch: str) -> list[dict[str, Any]]:
    rows = db.fetchall(f"SELECT stage, eventType, COUNT(DISTINCT fileName), MIN(createdAt) FROM {t} "
                       "WHERE batchId = %s AND stage IS NOT NULL GROUP BY stage, eventType", (batch,))
    stages: dict[str, dict[str, Any]] = {}
    first_seen: dict[str, datetime] = {}
    for stage, etype, files, first in rows:
        entry = stages.setdefault(stage, {"stage": stage, "started": 0, "completed": 0, "failed": 0,
                                          "state": "running", "total": None, "done": 0, "progress_pct": None})
        if etype in FILE_EVENTS:
            entry[FILE_EVENTS[etype]] = int(files)
        if etype == "stage_complete":
            entry["state"] = "completed"
        moment = _time(first)
        if moment is not None and (stage not in first_seen or moment < first_seen[stage]):
            first_seen[stage] = moment
    for stage, done in db.fetchall(f"SELECT stage, COUNT(DISTINCT fileName) FROM {t} WHERE batchId = %s "
                                   "AND eventType IN ('file_complete', 'error') AND stage IS NOT NULL "
                                   "GROUP BY stage", (batch,)):
        stages[stage]["done"] = int(done)
    progress = db.fetchall(
        f"SELECT p.stage, MAX(p.total) FROM {t} p JOIN (SELECT stage, MAX(createdAt) AS latest FROM {t} "
        "WHERE batchId = %s AND eventType = 'progress' GROUP BY stage) l "
        "ON p.stage = l.stage AND p.createdAt = l.latest "
        "WHERE p.batchId = %s AND p.eventType = 'progress' GROUP BY p.stage", (batch, batch))
    stage_totals = {stage: total for stage, total in progress if total is not None}
    batch_total = db.scalar(f"SELECT MAX(total) FROM {t} WHERE batchId = %s AND eventType = 'batch_start'", (batch,))
    for stage, entry in stages.items():
        total = stage_totals.get(stage, batch_total)
        entry["total"] = int(total) if total is not None else entry["started"]
        if entry["total"]:
            entry["progress_pct"] = round(min(100.0, 100.0 * entry["done"] / entry["total"]), 1)
    return sorted(stages.values(), key=lambda e: (first_seen.get(e["stage"], datetime.max), e["stage"]))


def _gpus(db: Database, t: str, batch: str) -> list[dict[str, Any]]:
    gpus: dict[str, dict[str, Any]] = {}
    for gpu, etype, n in db.fetchall(f"SELECT gpuIp, eventType, COUNT(*) FROM {t} WHERE batchId = %s "
                                     "AND gpuIp IS NOT NULL GROUP BY gpuIp, eventType", (batch,)):
        entry = gpus.setdefault(gpu, {"gpu": gpu, "events": 0, "started": 0, "completed": 0, "failed": 0})
        entry["events"] += int(n)
        if etype in FILE_EVENTS:
            entry[FILE_EVENTS[etype]] += int(n)
    return sorted(gpus.values(), key=lambda e: (-e["events"], e["gpu"]))


def render(report: dict[str, Any]) -> list[str]:
    lines = [f"batch {report['batch']} ({report['table']}): {report['events']} events, "
             f"{report['total_files'] if report['total_files'] is not None else '?'} files"]
    lines.append(f"  {'stage':<16} {'started':>8} {'completed':>10} {'failed':>7} {'progress':>9}  state")
    for s in report["stages"]:
        pct = f"{s['progress_pct']:.1f}%" if s["progress_pct"] is not None else "-"
        lines.append(f"  {s['stage']:<16} {s['started']:>8} {s['completed']:>10} {s['failed']:>7} {pct:>9}  "
                     f"{s['state']}")
    lines.append(f"errors: {report['errors']}")
    for e in report["top_errors"]:
        message = (e["message"] or "(no message)").replace("\n", " ")
        lines.append(f"  {e['count']:>7}  {message[:100]}")
    if report["gpus"]:
        lines.append(f"  {'gpu':<16} {'events':>8} {'started':>8} {'completed':>10} {'failed':>7}")
        for g in report["gpus"]:
            lines.append(f"  {g['gpu']:<16} {g['events']:>8} {g['started']:>8} {g['completed']:>10} "
                         f"{g['failed']:>7}")
    lines.append(f"first event {report['first_event']}, last {report['last_event']} ({report['seconds']:.1f} s)")
    if report["events_per_second"] is not None:
        lines.append(f"throughput: {report['events_per_second']} events/s, "
                     f"{report['files_completed_per_second']} file completions/s")
    return lines


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("report", help="what the dashboard shows for a batch",
                                   description=(__doc__ or "").split("``: ", 1)[-1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="mysql://user:pass@host:3306/db or sqlite:///path")
    parser.add_argument("--batch", help="batch id (default: the batch of the newest event)")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="events table (default: %(default)s)")
    parser.add_argument("--top", type=int, default=5, help="error messages to list (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        with Database(args.dsn, must_exist=True) as db:
            if not db.table_exists(args.table):
                raise ValueError(f"{args.table} does not exist in {db.dsn.redacted()}")
            batch = args.batch or latest_batch(db, args.table)
            report = build(db, args.table, batch, top=max(args.top, 0)) if batch is not None else None
    except (SinkError, ValueError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    if report is None:
        print(f"report: no events for batch {args.batch!r} in {args.table}" if args.batch
              else f"report: {args.table} is empty", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else "\n".join(render(report)))
    return 0
