"""``cofi-eventlog simulate``: the dual logging this library replaces against the library itself, measured
by the database.

A batch runs through the five stages twice on the same database: in the legacy shape (every event a
``processing_logs`` row written and committed, plus an unbuffered ``batchExecutionLog`` row) and in the
buffered shape (EventLogger). It prints rows, INSERT statements and time for each, as counted.
In a database the user names, it writes only into tables it made for the run (and drops them after), or
into the ones named with --table / --legacy-table.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from ... import SinkError
from ...database import DEFAULT_TABLE, Database
from ..dsn_option import add_dsn_option, dsn_from
from . import paced
from .legacy import LEGACY_TABLE, processing_logs_ddl
from .output import as_json, notes, table, wrapped
from .paced import UNLOGGED, Pace
from .pipeline import SHAPES, STAGES, Plan
from .runner import ShapeResult, Target, run_shape


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate", help="run a batch in the legacy and buffered shapes and count the writes",
        description="Run a batch through the stages " + " → ".join(STAGES) + " in the legacy shape (two single-row "
                    "INSERTs per event) and the buffered shape (EventLogger), one after the other on the same "
                    "database, and print what the database counted. It writes into tables it creates for the run "
                    "and drops afterwards, unless --table / --legacy-table name tables to use.")
    add_dsn_option(parser, default="SQLite in a temporary folder, deleted afterwards")
    parser.add_argument("--files", type=_bounded(int, 1), default=10000,
                        help="files in the batch (default: %(default)s)")
    parser.add_argument("--mode", type=_modes, default="both",
                        help="shapes to run, comma-separated: legacy, buffered, both (the two), and in a paced "
                             "run unlogged: the same pace without logging, the floor for the workers' CPU "
                             "(default: %(default)s)")
    parser.add_argument("--workers", type=_bounded(int, 1), default=1,
                        help="processes sharing the files, as GPU workers do (default: %(default)s)")
    parser.add_argument("--failure-rate", type=_bounded(float, 0.0, 1.0), default=0.01,
                        help="share of files that fail at some stage and leave the batch (default: %(default)s)")
    parser.add_argument("--file-seconds", type=_bounded(float, 0.0), default=None,
                        help="pace the workers: seconds each file takes at each stage, between its start and its "
                             f"outcome, ±{paced.JITTER:.0%} at random; measures delays, connections and the "
                             "workers' CPU (default: none, full speed)")
    parser.add_argument("--flush-interval", type=_bounded(float, 0.001), default=None,
                        help="the logger's flush_interval in a paced run (default: the library's)")
    parser.add_argument("--writer", choices=("host", "process"), default="host",
                        help="one writer for all the workers (the library's default, shared_writer=True), or "
                             "one per worker process (shared_writer=False)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with a key per shape")
    parser.add_argument("--table", help="events table to write into, created if missing and kept "
                                        "(default: one made for the run and dropped after it)")
    parser.add_argument("--legacy-table", help="legacy table to write into, created if missing and kept "
                                               "(default: one made for the run and dropped after it)")
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


def _modes(text: str) -> tuple[str, ...]:
    """--mode: shape names, comma-separated, "both" standing for legacy and buffered; in run order."""
    names: list[str] = []
    for part in text.split(","):
        part = part.strip()
        chosen = SHAPES if part == "both" else (part,)
        if not set(chosen) <= {*SHAPES, UNLOGGED}:
            raise argparse.ArgumentTypeError(f"unknown shape {part!r}: choose from legacy, buffered, unlogged, both")
        names += [name for name in chosen if name not in names]
    return tuple(names)


def run(args: argparse.Namespace) -> int:
    shapes: tuple[str, ...] = args.mode
    pace = None
    if args.file_seconds is not None:
        pace = Pace(args.file_seconds, args.flush_interval)
    elif args.flush_interval is not None:
        print("cofi-eventlog simulate: --flush-interval needs --file-seconds: at full speed every batch fills "
              "before the interval ends", file=sys.stderr)
        return 2
    elif UNLOGGED in shapes:
        print("cofi-eventlog simulate: the unlogged shape needs --file-seconds: it is the paced floor for the "
              "workers' CPU", file=sys.stderr)
        return 2
    temp = dsn = None
    made: list[str] = []
    results: dict[str, ShapeResult] = {}
    try:
        dsn = dsn_from(args)
        if dsn is None:
            temp = tempfile.mkdtemp(prefix="cofi-eventlog-simulate-")
            dsn = f"sqlite:///{os.path.join(temp, 'simulate.db')}"
        target, shown = prepare(dsn, args.table, args.legacy_table, legacy="legacy" in shapes,
                                users_database=temp is None, made=made,
                                spool_dir=os.path.join(temp, "spool") if temp else None)
        plan = Plan.make(args.files, args.failure_rate)
        for shape in shapes:
            results[shape] = run_shape(shape, target, plan, args.workers, pace, shared_writer=args.writer == "host")
    except (SinkError, ValueError, RuntimeError) as exc:
        print(f"cofi-eventlog simulate: {exc}", file=sys.stderr)
        return 2
    finally:
        if made and dsn:
            drop_tables(dsn, made)
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    if args.json:
        print(as_json(results))
    else:
        where = f"{shown} (temporary, deleted after the run)" if temp else shown
        if made:
            where += f", in {' and '.join(made)}, made for this run and dropped after it"
        workers = f"{args.workers} worker process{'es' if args.workers > 1 else ''}"
        if pace is not None:
            interval = "the default" if pace.flush_interval is None else f"{pace.flush_interval:g} s"
            workers += (f" at {pace.file_seconds:g} s ±{pace.jitter:.0%} per file and stage, flush_interval "
                        f"{interval}")
        if args.workers > 1:
            workers += ", one writer for the host" if args.writer == "host" else ", one writer per process"
        print(table(results, f"{args.files:,} files × {len(STAGES)} stages, {workers}, "
                             f"{args.failure_rate:.1%} failing, on {where}"))
        print()
        print(wrapped(notes(results)))
    return 0 if all(r.lost == 0 and r.flushed for r in results.values()) else 1


def prepare(dsn: str, table: str | None, legacy_table: str | None, *, legacy: bool, users_database: bool,
            made: list[str], spool_dir: str | None) -> tuple[Target, str]:
    """Create the tables up front, so the runs count only their own writes; returns the target and the
    DSN as it may be shown (no password). In the user's database, a table the user did not name is made
    for the run under a new name, and listed in ``made`` for dropping afterwards."""
    token = secrets.token_hex(4)
    with Database(dsn) as db:
        events = table or (f"cofi_sim_{token}_events" if users_database else DEFAULT_TABLE)
        old = legacy_table or (f"cofi_sim_{token}_processing_logs" if users_database else LEGACY_TABLE)
        for name, named in [(events, table)] + ([(old, legacy_table)] if legacy else []):
            db.name(name)  # refuses anything but a plain identifier
            if named is None and users_database:
                if db.table_exists(name):
                    raise ValueError(f"table {name} already exists; simulate writes only into tables it made "
                                     "or was told to use (--table, --legacy-table)")
                made.append(name)
        db.create_events_table(events)
        if legacy:
            db.execute(processing_logs_ddl(db.dialect, old))
        return Target(dsn, db.dialect, events, old, spool_dir), db.dsn.redacted()


def drop_tables(dsn: str, tables: list[str]) -> None:
    with Database(dsn) as db:
        for name in tables:
            db.execute(f"DROP TABLE IF EXISTS {db.name(name)}")
