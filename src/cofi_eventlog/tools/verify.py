"""``cofi-eventlog verify``: the migration plan's post-deployment checks for one test batch.

After deploying the code that logs only to batchExecutionLog, process a small batch and run this:
the batch's events (its errors among them) are in batchExecutionLog, and processing_logs, if it still
exists, received nothing for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..database import DEFAULT_TABLE, Database
from ..sinks import SinkError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("verify", help="post-deployment checks for a test batch",
                                   description=(__doc__ or "").split("``: ", 1)[-1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="mysql://user:pass@host:3306/db or sqlite:///path")
    parser.add_argument("--batch", required=True, help="the test batch's id")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="events table (default: %(default)s)")
    parser.add_argument("--legacy-table", default="processing_logs", help="legacy table (default: %(default)s)")
    parser.add_argument("--expect-errors", action="store_true",
                        help="fail when the batch logged no error events (for a batch made to fail some files)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def check(db: Database, batch: str, table: str, legacy: str, *, expect_errors: bool) -> dict[str, Any]:
    """The checks' figures and the problems found; ``passed`` when there are none."""
    problems: list[str] = []
    events: dict[str, int] = {}
    if db.table_exists(table):
        events = {str(t): int(n) for t, n in db.fetchall(
            f"SELECT eventType, COUNT(*) FROM {db.name(table)} WHERE batchId = %s GROUP BY eventType", (batch,))}
        if not events:
            problems.append(f"{table} holds no events for batch {batch}")
    else:
        problems.append(f"{table} does not exist")
    errors = events.get("error", 0)  # the plan's query 1
    if expect_errors and not errors:
        problems.append(f"{table} holds no error events for batch {batch}, and errors were expected")
    legacy_exists = db.table_exists(legacy)
    legacy_rows = None
    if legacy_exists:  # the plan's query 2
        legacy_rows = int(db.scalar(f"SELECT COUNT(*) FROM {db.name(legacy)} WHERE batch_id = %s", (batch,)))
        if legacy_rows:
            problems.append(f"{legacy} received {legacy_rows} rows for batch {batch}: something still writes to it")
    return {"batch": batch, "table": table, "events": events, "error_events": errors,
            "legacy_table": legacy, "legacy_exists": legacy_exists, "legacy_rows": legacy_rows,
            "passed": not problems, "problems": problems}


def run(args: argparse.Namespace) -> int:
    try:
        with Database(args.dsn, must_exist=True) as db:
            result = check(db, args.batch, args.table, args.legacy_table, expect_errors=args.expect_errors)
    except (SinkError, ValueError) as exc:
        print(f"verify: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"batch {result['batch']}")
        print(f"  {result['table']}: {sum(result['events'].values())} events "
              f"({', '.join(f'{t} {n}' for t, n in sorted(result['events'].items())) or 'none'})")
        print(f"  query 1, error events in {result['table']}: {result['error_events']}")
        if result["legacy_exists"]:
            print(f"  query 2, rows in {result['legacy_table']}: {result['legacy_rows']} (should be 0)")
        else:
            print(f"  query 2: {result['legacy_table']} no longer exists, so nothing can write to it")
        for problem in result["problems"]:
            print(f"FAILED: {problem}")
        print("passed" if result["passed"] else "verification failed")
    return 0 if result["passed"] else 1
