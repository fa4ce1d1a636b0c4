"""``cofi-eventlog verify``: after deploying the code that logs only to batchExecutionLog, check one test
batch: its events (its errors among them) are in batchExecutionLog, and processing_logs, if it is still
there, received nothing new for it.

Rows processing_logs holds for the batch are new writes when created at or after --since (the time the new
code was deployed), and history when created before. Batch ids are compared exactly, whatever the
collation of either table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import datetime
from typing import Any

from ..database import DEFAULT_TABLE, Database
from ..sinks import SinkError
from .command import add_command
from .dsn_option import add_dsn_option, require_dsn
from .migrate.mapping import utc_datetime
from .simulate.legacy import LEGACY_TABLE


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "verify", "check a test batch logged only to batchExecutionLog", __doc__)
    add_dsn_option(parser)
    parser.add_argument("--batch", required=True, help="the test batch's id")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="events table (default: %(default)s)")
    parser.add_argument("--legacy-table", default=LEGACY_TABLE, help="legacy table (default: %(default)s)")
    parser.add_argument("--since", type=_moment, metavar="'YYYY-MM-DD HH:MM'",
                        help="when the new code was deployed, UTC: older rows in the legacy table are history")
    parser.add_argument("--expect-errors", action="store_true",
                        help="fail when the batch logged no error events (for a batch made to fail some files)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def _moment(text: str) -> datetime:
    moment = utc_datetime(text)
    if moment is None:
        raise argparse.ArgumentTypeError(f"not a date and time: {text!r} (use 'YYYY-MM-DD HH:MM[:SS]', UTC)")
    return moment


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _rows(count: int) -> str:
    return f"{count:,} row{'' if count == 1 else 's'}"


def _events(db: Database, table: str, batch: str) -> tuple[dict[str, int], int]:
    """(event type → count, rows of look-alike batch ids a case-insensitive collation also matched)."""
    rows = db.fetchall(f"SELECT batchId, eventType FROM {db.name(table)} WHERE batchId = %s", (batch,))
    exact = Counter(str(t) for b, t in rows if b == batch)
    return dict(exact), len(rows) - sum(exact.values())


def _legacy(db: Database, table: str, batch: str) -> tuple[list[datetime | None], int, bool]:
    """(created_at of each of the batch's rows, look-alike rows, whether created_at exists)."""
    has_created = "created_at" in db.columns(table)
    created = db.name("created_at") if has_created else "NULL"
    rows = db.fetchall(f"SELECT {db.name('batch_id')}, {created} FROM {db.name(table)} "
                       f"WHERE {db.name('batch_id')} = %s", (batch,))
    exact = [utc_datetime(c) for b, c in rows if b == batch]
    return exact, len(rows) - len(exact), has_created


def check(db: Database, batch: str, table: str, legacy: str, *, expect_errors: bool,
          since: datetime | None = None) -> dict[str, Any]:
    """The figures, the queries that give them, what they mean, and the problems found."""
    if db.dialect == "mysql":
        db.execute("SET time_zone = '+00:00'")  # TIMESTAMP columns are read in UTC
    problems: list[str] = []
    findings: list[str] = []
    queries = [f"SELECT eventType, COUNT(*) FROM {table} WHERE batchId = {_literal(batch)} GROUP BY eventType",
               f"SELECT COUNT(*) FROM {table} WHERE eventType = 'error' AND batchId = {_literal(batch)}"]
    result: dict[str, Any] = {"batch": batch, "table": table, "legacy_table": legacy, "since": None,
                              "events": {}, "error_events": 0, "legacy_exists": False, "legacy_rows": None,
                              "legacy_history_rows": None, "legacy_new_rows": None, "queries": queries}
    if db.table_exists(table):
        events, lookalike = _events(db, table, batch)
        result["events"] = events
        result["error_events"] = errors = events.get("error", 0)
        total = sum(events.values())
        findings.append(f"{table} holds {total:,} event{'' if total == 1 else 's'} of batch {batch}"
                        + (f" ({', '.join(f'{t} {n:,}' for t, n in sorted(events.items()))})" if events else ""))
        if lookalike:
            findings.append(f"{table}'s collation also matches {_rows(lookalike)} of other batch ids that differ "
                            "only in case or accents; they are not counted")
        if not total:
            problems.append(f"{table} holds no events of batch {batch}: the new code did not log it here")
        findings.append(f"{errors:,} of them {'is an error event' if errors == 1 else 'are error events'}")
        if expect_errors and not errors:
            problems.append(f"{table} holds no error events of batch {batch}, and --expect-errors says it should")
    else:
        problems.append(f"{table} is not in this database; run cofi-eventlog init-db, then log the batch again")
    if db.table_exists(legacy):
        result["legacy_exists"] = True
        _check_legacy(db, batch, legacy, since, result, findings, problems)
    else:
        findings.append(f"{legacy} is not in this database, so nothing writes to it")
    result.update(findings=findings, problems=problems, passed=not problems)
    return result


def _check_legacy(db: Database, batch: str, legacy: str, since: datetime | None, result: dict[str, Any],
                  findings: list[str], problems: list[str]) -> None:
    created, lookalike, has_created = _legacy(db, legacy, batch)
    query = f"SELECT COUNT(*) FROM {legacy} WHERE batch_id = {_literal(batch)}"
    result["legacy_rows"] = rows = len(created)
    result["queries"].append(query + (f" AND created_at >= '{since:%Y-%m-%d %H:%M:%S}'" if since else ""))
    if lookalike:
        findings.append(f"{legacy}'s collation also matches {_rows(lookalike)} of other batch ids that differ "
                        "only in case or accents; they are not counted")
    if not rows:
        findings.append(f"{legacy} holds no rows of batch {batch}: nothing wrote there for it")
        result["legacy_history_rows"] = result["legacy_new_rows"] = 0
        return
    dated = sorted(c for c in created if c is not None)
    span = ""
    if dated:
        first, last = f"{dated[0]:%Y-%m-%d %H:%M:%S}", f"{dated[-1]:%Y-%m-%d %H:%M:%S}"
        span = f", created at {first} UTC" if first == last else f", created {first} to {last} UTC"
    if since is None or not has_created:
        why = ("pass --since with the time the new code was deployed to tell history from new writes"
               if has_created else f"{legacy} has no created_at column, so history cannot be told from new writes")
        they, were, are = ("it", "was", "is") if rows == 1 else ("they", "were", "are")
        problems.append(f"{legacy} holds {_rows(rows)} of batch {batch}{span}. If {they} {were} written after the "
                        f"new code was deployed, something still writes to {legacy}; if before, {they} {are} "
                        f"history: {why}")
        return
    result["since"] = f"{since:%Y-%m-%d %H:%M:%S}"
    new = [c for c in created if c is None or c >= since]
    result["legacy_new_rows"], result["legacy_history_rows"] = len(new), rows - len(new)
    if rows - len(new):
        findings.append(f"{legacy} holds {_rows(rows - len(new))} of batch {batch} created before "
                        f"{since:%Y-%m-%d %H:%M:%S} (--since): history, not new writes")
    if new:
        problems.append(f"{legacy} received {_rows(len(new))} of batch {batch} at or after {since:%Y-%m-%d %H:%M:%S} "
                        f"(--since){span}: something still writes to {legacy}; cofi-eventlog check-refs finds the "
                        "code that does")
    else:
        findings.append(f"{legacy} received nothing for batch {batch} since {since:%Y-%m-%d %H:%M:%S}")


def run(args: argparse.Namespace) -> int:
    try:
        with Database(require_dsn(args), must_exist=True) as db:
            result = check(db, args.batch, args.table, args.legacy_table, expect_errors=args.expect_errors,
                           since=args.since)
    except (SinkError, ValueError) as exc:
        print(f"verify: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"batch {result['batch']}:")
        for finding in result["findings"]:
            print(f"  {finding}")
        for problem in result["problems"]:
            print(f"  FAILED: {problem}")
        print("the same counts by hand (these match batch ids as the column's collation does):")
        for query in result["queries"]:
            print(f"  {query};")
        print("passed" if result["passed"] else "verification failed")
    return 0 if result["passed"] else 1
