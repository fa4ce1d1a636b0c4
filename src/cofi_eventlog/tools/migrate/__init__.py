"""``cofi-eventlog migrate``: back up processing_logs, copy each of its rows into batchExecutionLog exactly
once, check every row against its event, and (with --drop, only when every row passed and the backup still
holds the whole table) drop the legacy table.

Run it after the code that stopped writing processing_logs is deployed. It can be re-run at any time: a
backup that holds every row is kept, events already stored are checked and not written again, and the
backup is never dropped or changed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ...database import DEFAULT_TABLE, Database, MissingDatabase
from ...sinks import COLUMNS, EVENT_TYPES, SinkError, is_identifier
from ..command import add_command
from ..dsn_option import add_dsn_option, require_dsn
from ..progress import Progress
from ..simulate.legacy import LEGACY_TABLE
from . import backup as backups
from .backfill import column_limits, copy_and_check
from .checks import Outcome
from .mapping import STATUS_EVENTS, MigrationError, RowMapper, source_tag
from .source import LegacyTable, distinct_statuses, inspect, row_count


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "migrate", "back up processing_logs, copy and check its rows; --drop it", __doc__)
    add_dsn_option(parser)
    parser.add_argument("--source-table", default=LEGACY_TABLE, help="legacy table (default: %(default)s)")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="events table (default: %(default)s)")
    parser.add_argument("--backup-table", help="backup table (default: SOURCE_TABLE_backup)")
    parser.add_argument("--drop", action="store_true",
                        help="drop the legacy table once every row has its event and the backup holds them all")
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
        dsn = require_dsn(args)
        migration = Migration(args, statuses)
        with Database(dsn, must_exist=True) as db:
            if db.dialect == "mysql":
                db.execute("SET time_zone = '+00:00'")  # TIMESTAMP columns are read, and compared, in UTC
            return migration.run(db)
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


def _plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else many or word + 's'}"


class Migration:
    def __init__(self, args: argparse.Namespace, statuses: dict[str, str]) -> None:
        self.source: str = args.source_table
        self.target: str = args.table
        self.backup: str = args.backup_table or backups.backup_name(self.source)
        for option, name in (("--source-table", self.source), ("--table", self.target),
                             ("--backup-table", self.backup)):
            if not is_identifier(name):
                hint = " (the default backup name; pass a shorter --backup-table)" if not args.backup_table \
                    and option == "--backup-table" else ""
                raise MigrationError(f"{option} {name!r} is not a plain table name of at most 64 characters{hint}")
        backups.check_names(self.source, self.target, self.backup)
        self.dry = bool(args.dry_run)
        self.drop = bool(args.drop)
        self.chunk = int(args.chunk_size)
        self.progress = not args.quiet
        self.statuses = statuses

    def say(self, text: str) -> None:
        print(("[dry run] " if self.dry else "") + text, flush=True)

    def run(self, db: Database) -> int:
        if not db.table_exists(self.source):
            kept = f"; its backup {self.backup} is there" if db.table_exists(self.backup) else ""
            self.say(f"{self.source} is not in {db.dsn.redacted()}: nothing to migrate{kept}")
            return 0
        legacy = inspect(db, self.source)
        for assumption in legacy.assumptions:
            self.say(f"assumed: {assumption}")
        self.check_statuses(db, legacy)
        if not self.make_backup(db):
            return 1
        target_exists = db.table_exists(self.target)
        if not self.check_target(db, target_exists):
            return 1
        tag = source_tag(self.source)
        mapper = RowMapper(tag, self.statuses, column_limits(db, self.target), has_created=legacy.has("created_at"))
        bar = Progress(f"copy {self.source}", row_count(db, self.source), unit="rows", quiet=not self.progress)
        outcome = copy_and_check(db, legacy, self.target, mapper, chunk=self.chunk, write=not self.dry,
                                 target_exists=target_exists, progress=bar)
        self.report(outcome, mapper, tag)
        if self.dry:
            if self.drop:
                self.say(f"drop: would drop {self.source} if every row has its event and {self.backup} still "
                         f"holds every row; {self.backup} would stay")
            return 0
        return self.finish(db, outcome)

    def check_statuses(self, db: Database, legacy: LegacyTable) -> None:
        """Every status must have an event type before anything is written."""
        unknown = sorted({str(s) for s in distinct_statuses(db, legacy)
                          if s is not None and str(s).strip().lower() not in self.statuses})
        if unknown:
            raise MigrationError(f"{self.source} has status value(s) {', '.join(map(repr, unknown))} with no event "
                                 "type; pass --map-status STATUS=EVENT_TYPE for each (nothing was changed)")

    def make_backup(self, db: Database) -> bool:
        state = backups.compare(db, self.source, self.backup, self.chunk, show_progress=self.progress)
        if not state.exists:
            if self.dry:
                self.say(f"backup: would copy {row_count(db, self.source):,} rows of {self.source} to {self.backup}")
            else:
                copied = backups.create(db, self.source, self.backup)
                self.say(f"backup: copied {copied:,} rows of {self.source} to {self.backup}")
            return True
        if state.covers:
            self.say(f"backup: kept; {backups.describe(state, self.backup)}")
            return True
        print(f"migrate: the backup {self.backup} cannot serve. {backups.explain(state, self.source, self.backup)}",
              file=sys.stderr)
        return False

    def check_target(self, db: Database, exists: bool) -> bool:
        if not exists:
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

    def report(self, outcome: Outcome, mapper: RowMapper, tag: bytes) -> None:
        if self.dry:
            self.say(f"copy: would write {_plural(outcome.to_write, 'event')} to {self.target}; "
                     f"{outcome.present:,} already there")
        else:
            self.say(f"copy: {outcome.rows:,} rows of {self.source} read; {_plural(outcome.written, 'event')} "
                     f"written to {self.target}, {outcome.present:,} already there")
        self.say(f"events copied from {self.source} carry X'{tag.hex()}' as bytes 9-12 of their eventId: "
                 f"WHERE SUBSTRING(eventId, 9, 4) = X'{tag.hex()}' finds them")
        if mapper.notes.counts:
            self.say("rows stored with a change or a note (each event's metadata.coerced or metadata.payload_text "
                     "says which):")
        for kind, count in sorted(mapper.notes.counts.items()):
            ids = ", ".join(str(i) for i in mapper.notes.samples[kind])
            more = ", …" if count > len(mapper.notes.samples[kind]) else ""
            self.say(f"  {_plural(count, 'row')}: {kind} (legacy ids {ids}{more})")
        for line in outcome.problems():
            print(line, file=sys.stderr)
        if not self.dry:
            print(f"check: every row of {self.source} against its event in {self.target}, by eventId, column by "
                  "column:")
            for line in outcome.table(self.source, self.target):
                print(line)

    def finish(self, db: Database, outcome: Outcome) -> int:
        if not outcome.ok:
            self.explain_failure(outcome)
            return 1
        print(f"check passed: all {_plural(outcome.rows, 'row')} of {self.source} "
              f"({_plural(len(outcome.batches), 'batch', 'batches')}) have their event in {self.target}")
        if not self.drop:
            print(f"{self.source} kept; run again with --drop to drop it ({self.backup} stays)")
            return 0
        state = backups.drop_if_covered(db, self.source, self.backup, self.chunk)
        if not state.covers:
            print(f"migrate: {self.source} was not dropped. {backups.explain(state, self.source, self.backup)}",
                  file=sys.stderr)
            return 1
        print(f"dropped {self.source}; {self.backup} stays as the rollback path")
        return 0

    def explain_failure(self, outcome: Outcome) -> None:
        steps = []
        if outcome.counts["not carried"]:
            steps.append(f"rows not carried: correct them in {self.source}, or delete those {self.target} does "
                         f"not need ({self.backup} keeps them)")
        if outcome.counts["differs"]:
            steps.append(f"events that differ from their legacy row: the row was changed after it was copied, or "
                         f"another table named {self.source} was migrated before. Nothing was overwritten. If the "
                         f"legacy row is right, delete those events from {self.target} by their eventId, and the "
                         "next run copies the rows again; if not, rename this legacy table and migrate it under "
                         "its new name")
        if outcome.counts["missing"]:
            steps.append(f"events not found right after they were written: something deleted them from "
                         f"{self.target} meanwhile (a prune with a short --older-than?)")
        print(f"check FAILED for {_plural(sum(outcome.counts.values()), 'row')} (listed above), so {self.source} "
              "was not dropped. What to do before running again:", file=sys.stderr)
        for step in steps:
            print(f"  - {step}", file=sys.stderr)
