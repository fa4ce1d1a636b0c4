"""``cofi-eventlog prune --older-than 90d``: delete the events created before a cutoff, a chunk at a time,
along the primary key eventId, whose first 8 bytes are the event's time.

Each chunk is one short DELETE over a range of the key (at most --batch-size rows), committed on its own,
so no lock is held for long and writers at the newest end of the key are never in the way. SQLite has one
writer at a time, and a logger waiting for it polls, so there prune rests after each chunk as long as the
chunk took: the loggers get in between chunks instead of waiting out the whole prune. Every deleted
row is counted. A row is deleted only when its createdAt is before the cutoff too, so an eventId not made
by this library (one that does not start with its time) can never take a recent row with it.

Retention is by batch: a batch with any event after the cutoff (one still running, or resumed) keeps all
its events, old ones included, so a batch is never seen half deleted (completed, with its head gone).
Its old rows go in a later run, once the whole batch is older than the cutoff.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ..database import DEFAULT_TABLE, Database
from ..sinks import SinkError
from .command import add_command
from .dsn_option import add_dsn_option, require_dsn
from .progress import Progress

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_age(text: str) -> timedelta:
    """'90d', '12h', '2w', '30m', '45s'."""
    match = _AGE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age; write a number and a unit: 90d, 12h, 2w, 30m")
    age = timedelta(**{UNITS[match.group(2)]: float(match.group(1))})
    if age <= timedelta(0):
        raise argparse.ArgumentTypeError("--older-than must be more than 0")
    return age


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "prune", "delete events older than an age, in small chunks", __doc__)
    add_dsn_option(parser)
    parser.add_argument("--older-than", type=parse_age, required=True, metavar="AGE",
                        help="delete events created longer ago than this: 90d, 12h, 2w, 30m, 45s")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="events table (default: %(default)s)")
    parser.add_argument("--batch-size", type=_positive, default=5000,
                        help="rows per DELETE, each its own transaction (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


@dataclass
class Pruned:
    table: str
    cutoff: str  # UTC
    dry_run: bool
    matching: int  # rows older than the cutoff by eventId and createdAt, before the run
    deleted: int = 0
    chunks: int = 0  # DELETE statements that deleted rows
    seconds: float = 0.0
    longest_chunk_seconds: float = 0.0  # the longest DELETE: how long one chunk held its locks
    kept_newer: int = 0  # eventId before the cutoff but createdAt after it: not this library's ids
    kept_running: int = 0  # old rows of batches that have events after the cutoff: kept with their batch
    running_batches: int = 0  # those batches
    without_event_id: int = 0  # rows of a table upgraded by init-db, written before it had eventIds


def cutoff_key(cutoff: datetime) -> bytes:
    """The smallest eventId of an event made at ``cutoff`` (naive UTC)."""
    delta = cutoff - datetime(1970, 1, 1)
    ns = ((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000
    return max(ns, 0).to_bytes(8, "big") + bytes(8)


# Batch ids per IN list: well under SQLite's 999 parameters and any statement cap.
IN_LIST = 500


def prune(db: Database, table: str, cutoff: datetime, *, batch_size: int, dry_run: bool,
          show_progress: bool = False) -> Pruned:
    """Delete (or, dry, count) the rows of ``table`` created before ``cutoff``, naive UTC, but none of a batch
    that has events after it."""
    name, key = db.name(table), cutoff_key(cutoff)
    created = cutoff.isoformat(sep=" ", timespec="microseconds")
    old = db.fetchall(f"SELECT batchId, COUNT(*) FROM {name} WHERE eventId < %s AND createdAt < %s GROUP BY batchId",
                      (key, created))
    below = int(db.scalar(f"SELECT COUNT(*) FROM {name} WHERE eventId < %s", (key,)))
    running = _running(db, name, [b for b, _ in old], created)
    kept_running = sum(int(n) for b, n in old if b in running)
    result = Pruned(table, created, dry_run, matching=sum(int(n) for _, n in old) - kept_running,
                    kept_newer=below - sum(int(n) for _, n in old), kept_running=kept_running,
                    running_batches=len(running),
                    without_event_id=int(db.scalar(f"SELECT COUNT(*) FROM {name} WHERE eventId IS NULL")))
    if dry_run or not result.matching:
        return result
    bar = Progress(f"prune {table}", result.matching, unit="rows", quiet=not show_progress)
    started = time.monotonic()
    last: bytes | None = None
    while True:
        after, params = ("", ()) if last is None else (" AND eventId > %s", (last,))
        edge = db.scalar(f"SELECT eventId FROM {name} WHERE eventId < %s{after} ORDER BY eventId "
                         f"LIMIT 1 OFFSET {batch_size - 1}", (key, *params))
        upper = ("eventId < %s", key) if edge is None else ("eventId <= %s", bytes(edge))  # None: the last chunk
        where = f"{upper[0]} AND createdAt < %s{after}"
        # asked again for each chunk, right before it goes: a batch may have resumed since the count
        batches = [r[0] for r in db.fetchall(f"SELECT DISTINCT batchId FROM {name} WHERE {where}",
                                             (upper[1], created, *params))]
        keep = sorted(_running(db, name, batches, created))
        began = time.monotonic()
        deleted = 0
        if len(keep) < len(batches):
            spare = f" AND batchId NOT IN ({', '.join(['%s'] * len(keep))})" if keep else ""
            deleted = db.execute(f"DELETE FROM {name} WHERE {where}{spare}", (upper[1], created, *params, *keep))
        took = time.monotonic() - began
        result.longest_chunk_seconds = max(result.longest_chunk_seconds, took)
        result.deleted += deleted
        result.chunks += deleted > 0
        bar.update(result.deleted)
        if edge is None:
            break
        last = bytes(edge)
        if db.dialect == "sqlite":
            time.sleep(took)
    result.seconds = time.monotonic() - started
    bar.finish()
    return result


def _running(db: Database, name: str, batches: list[Any], created: str) -> set[Any]:
    """Those of ``batches`` with an event at or after the cutoff (found along the (batchId, createdAt) index)."""
    found: set[Any] = set()
    for start in range(0, len(batches), IN_LIST):
        part = batches[start:start + IN_LIST]
        found.update(r[0] for r in db.fetchall(f"SELECT DISTINCT batchId FROM {name} WHERE batchId IN "
                                               f"({', '.join(['%s'] * len(part))}) AND createdAt >= %s",
                                               (*part, created)))
    return found


def run(args: argparse.Namespace) -> int:
    cutoff = datetime.now(timezone.utc).replace(tzinfo=None) - args.older_than
    try:
        with Database(require_dsn(args), must_exist=True) as db:
            db.name(args.table)
            if not db.table_exists(args.table):
                raise ValueError(f"{args.table} is not in {db.dsn.redacted()}")
            if "eventId" not in db.columns(args.table):
                raise ValueError(f"{args.table} has no eventId column; run cofi-eventlog init-db first")
            where = db.dsn.redacted()
            result = prune(db, args.table, cutoff, batch_size=args.batch_size, dry_run=args.dry_run,
                           show_progress=not args.quiet)
    except (SinkError, ValueError) as exc:  # MissingDatabase is a ValueError
        print(f"prune: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return 0
    print(f"{args.table} in {where}: events created before {result.cutoff[:19]} UTC (older than "
          f"{_age(args.older_than)})")
    if args.dry_run:
        chunks = -(-result.matching // args.batch_size)
        print(f"would delete {_count(result.matching, 'event')}, in about {_count(chunks, 'chunk')} of up to "
              f"{args.batch_size:,}")
    else:
        rate = f", {result.deleted / result.seconds:,.0f} rows/s" if result.seconds > 0 else ""
        print(f"deleted {_count(result.deleted, 'event')} in {_count(result.chunks, 'chunk')} of up to "
              f"{args.batch_size:,} rows, {result.seconds:.1f} s{rate}; the longest chunk took "
              f"{result.longest_chunk_seconds * 1000:,.0f} ms")
    if result.kept_running:
        print(f"kept {_count(result.kept_running, 'older event')} of {_count(result.running_batches, 'batch')} "
              "with events after the cutoff: a batch is deleted whole, once all of it is older")
    if result.kept_newer:
        print(f"kept {_count(result.kept_newer, 'row')} whose eventId is older than the cutoff but whose createdAt "
              "is not: their eventIds were not made by this library")
    if result.without_event_id:
        print(f"left {_count(result.without_event_id, 'row')} that have no eventId (written before init-db added it); "
              f"delete those by createdAt yourself, in chunks: DELETE FROM {args.table} WHERE eventId IS NULL AND "
              f"createdAt < '{result.cutoff[:19]}' LIMIT {args.batch_size}")
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 'es' if noun.endswith('ch') else 's'}"


def _age(age: timedelta) -> str:
    seconds = age.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
