"""``cofi-eventlog simulate``: the seed's before/after, measured by the database.

A batch runs through the five stages twice on the same database: in the legacy shape (every event a
``processing_logs`` row written and committed, plus an unbuffered ``batchExecutionLog`` row) and in the
buffered shape (EventLogger). The table it prints is the seed's "Benefits After Migration", counted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from ... import SinkError
from ...database import DEFAULT_TABLE, Database
from .legacy import LEGACY_TABLE, processing_logs_ddl
from .output import as_json, notes, table, wrapped
from .pipeline import SHAPES, STAGES, Plan
from .runner import ShapeResult, Target, run_shape


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate", help="run a batch in the legacy and buffered shapes and count the writes",
        description="Run a batch through the stages " + " → ".join(STAGES) + " in the legacy shape (two single-row "
                    "INSERTs per event) and the buffered shape (EventLogger), one after the other on the same "
                    "database, and print what the database counted.")
    parser.add_argument("--dsn", help="mysql://user:pass@host:3306/db or sqlite:///path "
                                      "(default: SQLite in a temporary folder, deleted afterwards)")
    parser.add_argument("--files", type=_bounded(int, 1), default=10000,
                        help="files in the batch (default: %(default)s)")
    parser.add_argument("--mode", choices=(*SHAPES, "both"), default="both",
                        help="shapes to run (default: %(default)s)")
    parser.add_argument("--workers", type=_bounded(int, 1), default=1,
                        help="processes sharing the files, as GPU workers do (default: %(default)s)")
    parser.add_argument("--failure-rate", type=_bounded(float, 0.0, 1.0), default=0.01,
                        help="share of files that fail at some stage and leave the batch (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with a key per shape")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="events table (default: %(default)s)")
    parser.add_argument("--legacy-table", default=LEGACY_TABLE, help="legacy table (default: %(default)s)")
    parser.set_defaults(run=run)


def _bounded(kind: Callable[[str], Any], low: float, high: float | None = None) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` within [low, high]."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= (high if high is not None else value):  # NaN fails too
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value
    return parse


def run(args: argparse.Namespace) -> int:
    shapes = SHAPES if args.mode == "both" else (args.mode,)
    temp = None if args.dsn else tempfile.mkdtemp(prefix="cofi-eventlog-simulate-")
    dsn = args.dsn or f"sqlite:///{os.path.join(temp or '', 'simulate.db')}"
    results: dict[str, ShapeResult] = {}
    try:
        target, shown = prepare(dsn, args.table, args.legacy_table, legacy="legacy" in shapes,
                                spool_dir=os.path.join(temp, "spool") if temp else None)
        plan = Plan.make(args.files, args.failure_rate)
        for shape in shapes:
            results[shape] = run_shape(shape, target, plan, args.workers)
    except (SinkError, ValueError, RuntimeError) as exc:
        print(f"cofi-eventlog simulate: {exc}", file=sys.stderr)
        return 2
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    if args.json:
        print(as_json(results))
    else:
        where = f"{shown} (temporary, deleted after the run)" if temp else shown
        workers = f"{args.workers} worker process{'es' if args.workers > 1 else ''}"
        print(table(results, f"{args.files:,} files × {len(STAGES)} stages, {workers}, "
                             f"{args.failure_rate:.1%} failing, on {where}"))
        print()
        print(wrapped(notes(results)))
    return 0 if all(r.lost == 0 and r.flushed for r in results.values()) else 1


def prepare(dsn: str, table: str, legacy_table: str, *, legacy: bool, spool_dir: str | None) -> tuple[Target, str]:
    """Create the tables up front, so the runs count only their own writes; returns the target and the
    DSN as it may be shown (no password)."""
    with Database(dsn) as db:
        db.create_events_table(table)
        if legacy:
            db.name(legacy_table)  # refuses anything but a plain identifier
            db.execute(processing_logs_ddl(db.dialect, legacy_table))
        return Target(dsn, db.dialect, table, legacy_table, spool_dir), db.dsn.redacted()
