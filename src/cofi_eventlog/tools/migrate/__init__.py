"""``cofi-eventlog migrate``: back up processing_logs, copy its rows into batchExecutionLog exactly once,
verify the copy batch by batch, and (with --drop, only after verification passed) drop the legacy table.

Run it after the code that stopped writing processing_logs is deployed. It can be re-run at any time:
an identical backup is kept, rows already copied are skipped, and the backup is never dropped.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ...database import DEFAULT_TABLE, Database, MissingDatabase
from ...sinks import COLUMNS, EVENT_TYPES, SinkError
from ..progress import Progress
from . import backup as backups
from .backfill import backfill, column_limits
from .checks import check_batches, migrated_count, render
from .mapping import STATUS_EVENTS, MigrationError, RowMapper
from .source import LegacyTable, distinct_statuses, inspect, row_count


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("migrate", help="back up, backfill and verify processing_logs; --drop it",
                                   description=(__doc__ or "").split("``: ", 1)[-1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="mysql://user:pass@host:3306/db or sqlite:///path")
    parser.add_argument("--source-table", default="processing_logs", help="legacy table (default: %(default)s)")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="events table (default: %(default)s)")
    parser.add_argument("--backup-table", help="backup table (default: SOURCE_TABLE_backup)")
    parser.add_argument("--drop", action="store_true", help="drop the legacy table once verification passed")
    parser.add_argument("--dry-run", action="store_true", help="change nothing; say what would happen")
    parser.add_argument("--chunk-size", type=int, default=5000, help="rows per read and insert (default: %(default)s)")
    parser.add_argument("--map-status", action="append", default=[], metavar="STATUS=EVENT_TYPE",
                        help="event type for a legacy status other than failed/error/success (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        statuses = status_map(args.map_status)
        if args.chunk_size <= 0:
            raise MigrationError("--chunk-size must be positive")
        with Database(args.dsn, must_exist=True) as db:
            if db.dialect == "mysql":
                db.execute("SET time_zone = '+00:00'")  # TIMESTAMP columns are read, and compared, in UTC
            return Migration(db, args, statuses).run()
    except MissingDatabase as exc:
        print(f"{exc}: nothing to migrate")
        return 0
    except (MigrationError, SinkError, ValueError) as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 2


def status_map(pairs: list[str]) -> dict[str, str]:
    mapping = dict(STATUS_EVENTS)
    for pair in pairs:
        status, sep, event_type = pair.partition("=")
        if not sep or event_type not in EVENT_TYPES:
            raise MigrationError(f"--map-status {pair!r}: expected STATUS=EVENT_TYPE, EVENT_TYPE one of "
                                 f"{', '.join(EVENT_TYPES)}")
        mapping[status.strip().lower()] = event_type
    return mapping


class Migration:
    def __init__(self, db: Database, args: argparse.Namespace, statuses: dict[str, str]) -> None:
        self.db = db
        self.source: str = args.source_table
        self.target: str = args.table
        self.backup: str = args.backup_table or backups.backup_name(self.source)
        for name in (self.source, self.target, self.backup):
            db.name(name)
        self.dry = bool(args.dry_run)
        self.drop = bool(args.drop)
        self.chunk = int(args.chunk_size)
        self.progress = not args.quiet
        self.statuses = statuses

    def say(self, text: str) -> None:
        print(("[dry run] " if self.dry else "") + text, flush=True)

    def run(self) -> int:
        db = self.db
        if not db.table_exists(self.source):
            kept = f"; the backup {self.backup} is kept" if db.table_exists(self.backup) else ""
            self.say(f"{self.source} does not exist in {db.dsn.redacted()}: nothing to migrate{kept}")
            return 0
        legacy = inspect(db, self.source)
        for assumption in legacy.assumptions:
            self.say(f"assumed: {assumption}")
        self.check_statuses(legacy)
        if not self.make_backup():
            return 1
        if not self.ensure_target():
            return 1
        if self.dry:
            return self.dry_run_backfill(legacy)
        mapper = RowMapper(self.statuses, time.time_ns() // 1000, column_limits(db, self.target))
        total = row_count(db, self.source)
        bar = Progress(f"backfill {self.source}", total, quiet=not self.progress)
        inserted = backfill(db, legacy, self.target, mapper, chunk=self.chunk, progress=bar)
        self.say(f"backfill: {total} legacy rows read, {inserted} new events written to {self.target}, "
                 f"{total - inserted} already there")
        for note, count in sorted(mapper.notes.items()):
            self.say(f"assumed for {count} rows: {note}")
        return self.verify_and_drop()

    def check_statuses(self, legacy: LegacyTable) -> None:
        """Every status must have an event type before anything is written."""
        unknown = sorted({str(s) for s in distinct_statuses(self.db, legacy)
                          if s is not None and str(s).strip().lower() not in self.statuses})
        if unknown:
            raise MigrationError(f"{self.source} has status value(s) {', '.join(map(repr, unknown))} with no event "
                                 "type; pass --map-status STATUS=EVENT_TYPE for each (nothing was changed)")

    def make_backup(self) -> bool:
        state = backups.compare(self.db, self.source, self.backup, self.chunk, show_progress=self.progress)
        if state.action == "differs":
            print(f"migrate: {state.reason}. It is not overwritten: rename or drop it yourself, or pass "
                  "--backup-table NAME. Nothing was changed.", file=sys.stderr)
            return False
        if state.action == "identical":
            self.say(f"backup: skipped, {state.reason}")
        elif self.dry:
            self.say(f"backup: would copy {row_count(self.db, self.source)} rows of {self.source} to {self.backup}")
        else:
            copied = backups.create(self.db, self.source, self.backup)
            self.say(f"backup: copied {copied} rows of {self.source} to {self.backup}")
        return True

    def ensure_target(self) -> bool:
        db = self.db
        if not db.table_exists(self.target):
            if not self.dry:
                db.create_events_table(self.target)
            self.say(f"{self.target}: {'would create' if self.dry else 'created'} it")
            return True
        missing = [c for c in COLUMNS if c not in set(db.columns(self.target))]
        if missing:
            print(f"migrate: {self.target} lacks column(s) {', '.join(missing)}; run `cofi-eventlog init-db` "
                  "first. Nothing was copied.", file=sys.stderr)
            return False
        return True

    def dry_run_backfill(self, legacy: LegacyTable) -> int:
        total = row_count(self.db, self.source)
        present = migrated_count(self.db, self.target) if self.db.table_exists(self.target) else 0
        self.say(f"backfill: would read {total} rows of {legacy.name} in chunks of {self.chunk}; "
                 f"{present} migrated events are already in {self.target}, "
                 f"so about {max(total - present, 0)} would be written")
        self.say("verify: would compare the counts per batch and print the verification queries")
        if self.drop:
            self.say(f"drop: would drop {self.source} if verification passed; {self.backup} would stay")
        return 0

    def verify_and_drop(self) -> int:
        checks = check_batches(self.db, self.source, self.target)
        for line in render(checks, self.source, self.target):
            print(line)
        bad = [c for c in checks if not c.ok]
        if bad:
            print(f"verification FAILED for {len(bad)} of {len(checks)} batches; {self.source} was not dropped",
                  file=sys.stderr)
            return 1
        print(f"verification passed: {len(checks)} batches, {sum(c.migrated for c in checks)} rows")
        if self.drop:
            rows, kept = row_count(self.db, self.source), row_count(self.db, self.backup)
            if rows != sum(c.legacy_rows for c in checks) or rows != kept:
                print(f"{self.source} changed during the run ({rows} rows, backup {kept}); not dropped. "
                      "Is the old code still writing to it?", file=sys.stderr)
                return 1
            self.db.execute(f"DROP TABLE {self.db.name(self.source)}")
            print(f"dropped {self.source}; the backup {self.backup} stays as the rollback path")
        else:
            print(f"{self.source} kept; run again with --drop to drop it (the backup {self.backup} stays)")
        return 0

