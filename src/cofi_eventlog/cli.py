"""The ``cofi-eventlog`` command. Each subcommand lives in its own module under ``tools/`` and
exposes ``register(subparsers)``; this file only wires them together."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence

import pymysql

from . import __version__
from .sinks import mysql_connect
from .tools import check_refs, dashboard, init_db, migrate, prune, report, simulate, spool, verify

# in the order `--help` lists them
SUBCOMMANDS = (simulate, init_db, migrate, verify, check_refs, report, dashboard, prune, spool)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cofi-eventlog",
        description="The batchExecutionLog event logger's tools: measure the write reduction (simulate), "
                    "carry out the migration from processing_logs (init-db, migrate, verify, check-refs), "
                    "watch batches (report, dashboard), keep the table to a retention period (prune), and see "
                    "to the loggers' disk spools (spool). A command that needs a database takes it from --dsn, "
                    "else from the file --dsn-file names, else from $COFI_EVENTLOG_DSN.")
    parser.add_argument("--version", action="version", version=f"cofi-eventlog {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except (pymysql.MySQLError, sqlite3.Error) as exc:  # a statement the database refused, past connecting
        text = str(mysql_connect.classify(exc)) if isinstance(exc, pymysql.MySQLError) else f"sqlite error: {exc}"
        print(f"cofi-eventlog {args.command}: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
