"""``cofi-eventlog report``: one batch at a glance, from batchExecutionLog alone; the figures of the
dashboard's batch page (``--json`` prints the same object as ``/api/batches/<id>``).

Without --batch it reports the batch of the newest event by time. A batch or stage is "running" while
events arrive, "completed"/"done" only when every file expected has an outcome, "stalled" when it went
quiet short of that, "ended short" when it said it completed short of that or stayed quiet for
--ended-after with work left (its process is gone), "unconfirmed" when it went quiet without declaring its
stages or logging batch_complete, "migrated" for history copied from processing_logs. Times are UTC.
Stored text is printed with control characters escaped. --failed prints the failed files as CSV.

Exit status: 0; 1 no such batch (or an empty table); 2 a usage or database error; 3 an alert: more
errors than --max-errors, or with --fail-if-stalled a batch that stalled, ended short or is unconfirmed.
--watch redraws every few seconds while the batch runs and exits with that status once it stops running.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from ..database import DEFAULT_TABLE
from ..sinks import SinkError
from .batchview import BatchViews, Reader, as_csv, errors_since, failed_files, newest_batch
from .batchview.states import ALERTS
from .command import add_command
from .dsn_option import add_dsn_option, require_dsn
from .report_text import printable, render, render_recent_errors

ALERT = 3
CLEAR = "\x1b[H\x1b[2J"


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "report", "one batch at a glance: stages, errors, GPUs; alerts", __doc__)
    add_dsn_option(parser)
    parser.add_argument("--batch", help="batch id (default: the batch of the newest event)")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="events table (default: %(default)s)")
    parser.add_argument("--top", type=int, default=5, help="error groups to list (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--watch", type=float, nargs="?", const=5.0, metavar="SECONDS",
                        help="redraw every SECONDS (default 5) while the batch runs")
    parser.add_argument("--quiet-after", type=float, default=60.0, metavar="SECONDS",
                        help="a batch with no event for this long is no longer running, an attempt open this "
                             "long is stuck (default: %(default)s)")
    parser.add_argument("--ended-after", type=float, metavar="SECONDS",
                        help="a batch quiet this long with work left has ended short: its process is gone "
                             "(default: 10 × --quiet-after)")
    parser.add_argument("--failed", action="store_true",
                        help="print the batch's failed files as CSV (file, stage, gpu, time, error type, message; "
                             "with --json as JSON)")
    parser.add_argument("--max-errors", type=int, metavar="N", help="exit 3 when there are more than N errors")
    parser.add_argument("--fail-if-stalled", action="store_true",
                        help="exit 3 when the batch stalled, ended short or is unconfirmed")
    parser.add_argument("--errors-since", type=float, metavar="MINUTES",
                        help="instead of one batch: the errors of every batch in the last MINUTES "
                             "(--max-errors applies to their sum)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.watch is not None and args.watch <= 0:
            raise ValueError("--watch needs a positive number of seconds")
        with Reader(require_dsn(args)) as reader:
            if not reader.table_exists(args.table):
                raise ValueError(f"{args.table} does not exist in {reader.dsn.redacted()}")
            if args.errors_since is not None:
                return _recent_errors(reader, args)
            batch = args.batch or newest_batch(reader, args.table)
            if batch is None:
                print(f"report: {args.table} is empty", file=sys.stderr)
                return 1
            if args.failed:
                return _failed(reader, batch, args)
            views = BatchViews(args.table, quiet_after=args.quiet_after, ended_after=args.ended_after)
            return _follow(reader, views, batch, args)
    except (SinkError, ValueError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2


def _follow(reader: Reader, views: BatchViews, batch: str, args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty()
    while True:
        shown = views.batch(reader, batch)
        if shown is None:
            print(f"report: no events for batch {printable(batch)} in {args.table}", file=sys.stderr)
            return 1
        if args.watch is not None and tty:
            sys.stdout.write(CLEAR)
        print(json.dumps(shown, indent=2) if args.json else "\n".join(render(shown, top=max(args.top, 0))))
        if args.watch is None or shown["state"] != "running":
            return _status(shown, args)
        if not tty:
            print(f"-- next in {args.watch:g} s", flush=True)
        sys.stdout.flush()
        time.sleep(args.watch)


def _status(shown: dict[str, Any], args: argparse.Namespace) -> int:
    if args.max_errors is not None and shown["errors"] > args.max_errors:
        print(f"report: {shown['errors']} errors, more than --max-errors {args.max_errors}", file=sys.stderr)
        return ALERT
    if args.fail_if_stalled and shown["state"] in ALERTS:
        print(f"report: the batch {shown['state']}", file=sys.stderr)
        return ALERT
    return 0


def _recent_errors(reader: Reader, args: argparse.Namespace) -> int:
    found = errors_since(reader, args.table, datetime.now(timezone.utc) - timedelta(minutes=args.errors_since))
    print(json.dumps(found, indent=2) if args.json else "\n".join(render_recent_errors(found)))
    if args.max_errors is not None and found["errors"] > args.max_errors:
        print(f"report: {found['errors']} errors, more than --max-errors {args.max_errors}", file=sys.stderr)
        return ALERT
    return 0


def _failed(reader: Reader, batch: str, args: argparse.Namespace) -> int:
    found = failed_files(reader, args.table, batch)
    if sys.stdout.isatty():  # stored text reaches a terminal escaped; piped, the CSV is the stored text
        found = {**found, "files": [{k: v if k == "time_utc" else printable(v) for k, v in f.items()}
                                    for f in found["files"]]}
    sys.stdout.write(json.dumps(found, indent=2) + "\n" if args.json else as_csv(found))
    if found["truncated"]:
        print(f"report: only the newest {len(found['files']):,} errors were looked at", file=sys.stderr)
    return 0
