"""``cofi-eventlog spool``: what the loggers' spool folders hold, and getting it out.

  status         each spool folder: where its rows go, events not yet in the database, the oldest, dead letters
  replay         write the journals no running process holds now (into --dsn; another database if the old one
                 is gone)
  dead-letters   list the rows the database refused; --retry sends them again once the cause is fixed

A folder is chosen with --folder, else by --dsn and --table (the folder a logger with them uses).
Loggers write the journals of processes that are gone by themselves; these are for a person. Stored
text is printed escaped (see report_text.printable): a row cannot send control sequences to a terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..database import DEFAULT_TABLE
from ..spools import Outcome, dead_letters, folder_of, inspect_folder, replay, retry_dead_letters, spool_folders
from .command import add_command
from .dsn_option import add_dsn_option, dsn_from, require_dsn
from .report_text import printable


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "spool", "what the loggers' disk spools hold; replay; dead letters", __doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="what each spool folder holds")
    replay_ = actions.add_parser("replay", help="write a folder's waiting events now")
    letters = actions.add_parser("dead-letters", help="list (or --retry) the rows the database refused")
    letters.add_argument("--retry", action="store_true", help="send them again (needs a DSN)")
    letters.add_argument("--limit", type=int, default=20, help="entries to print (default: %(default)s)")
    for sub in (status, replay_, letters):
        sub.add_argument("--spool-dir", help="the loggers' spool_dir (default: this user's)")
        sub.add_argument("--json", action="store_true", help="print the result as JSON")
    for sub in (replay_, letters):
        add_dsn_option(sub)
        sub.add_argument("--table", default=DEFAULT_TABLE, help="events table (default: %(default)s)")
        sub.add_argument("--folder", type=Path, help="a spool folder, instead of the one --dsn and --table name")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "status":
            return _status(args)
        if args.action == "replay":
            return _replay(args)
        return _dead_letters(args)
    except ValueError as exc:
        print(f"spool: {exc}", file=sys.stderr)
        return 2


def _folder(args: argparse.Namespace) -> Path:
    if args.folder is not None:
        if not args.folder.is_dir():
            raise ValueError(f"{args.folder} is not a folder")
        return Path(args.folder)
    dsn = dsn_from(args)
    if dsn is None:
        raise ValueError("name a spool folder with --folder, or the loggers' target with --dsn/--dsn-file/"
                         "COFI_EVENTLOG_DSN")
    return folder_of(dsn, args.table, args.spool_dir)


def _status(args: argparse.Namespace) -> int:
    folders = spool_folders(args.spool_dir)
    if args.json:
        print(json.dumps([asdict(f) for f in folders], default=str, indent=2))
        return 0
    if not folders:
        print("no spool folders")
    for f in folders:
        oldest = f.oldest.strftime("%Y-%m-%d %H:%M:%S UTC") if f.oldest else "-"
        held = f", {f.held} held by a running process" if f.held else ""
        print(f"{printable(f.path)}\n  target {printable(f.target or '?')}, table {printable(f.table or '?')}\n"
              f"  {f.events:,} events not yet in the database, in {f.journals} journals{held}, {f.bytes:,} bytes, "
              f"oldest {oldest}; {f.dead_letters:,} dead letters")
        if f.writers:
            print(f"  written by process {', '.join(map(str, f.writers))} (the host's shared writer)")
        if f.torn_bytes:
            print(f"  {f.torn_bytes:,} bytes of records cut short by a death mid-call (those calls never returned)")
        if f.set_aside:
            print(f"  set aside, not written: {printable(', '.join(f.set_aside))}")
    return 0


def _report(args: argparse.Namespace, what: str, outcome: Outcome) -> int:
    if args.json:
        print(json.dumps(asdict(outcome)))
    else:
        print(f"{what}: {outcome.written:,} written, {outcome.dead_lettered:,} dead-lettered, "
              f"{outcome.left:,} left" + (f"; stopped: {outcome.error}" if outcome.error else ""))
    return 1 if outcome.error else 0


def _replay(args: argparse.Namespace) -> int:
    folder = _folder(args)
    table = args.table if args.folder is None else None  # a named folder knows its own table
    return _report(args, f"replay {folder}", replay(folder, require_dsn(args), table))


def _dead_letters(args: argparse.Namespace) -> int:
    folder = _folder(args)
    if args.retry:
        table = args.table if args.folder is None else None
        return _report(args, f"retry {folder}", retry_dead_letters(folder, require_dsn(args), table))
    entries = dead_letters(folder)
    if args.json:
        print(json.dumps(entries[: args.limit] if args.limit > 0 else entries, indent=2))
        return 0
    table = printable(inspect_folder(folder).table or "?")
    print(f"{printable(folder)}: {len(entries):,} dead letters (table {table})")
    for entry in entries[: max(args.limit, 0)]:
        row = entry.get("row") or []
        what = " ".join(str(v) for v in row[1:5]) if len(row) > 4 else entry.get("record", "(call kept as text)")
        print(f"  {printable(row[0] if row else '-')}  {printable(what)}\n    {printable(entry.get('reason'))}")
    return 0
