"""The ``cofi-eventlog`` command. Each subcommand lives in its own module under ``tools/`` and
exposes ``register(subparsers)``; this file only wires them together."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .tools import check_refs, dashboard, init_db, migrate, report, simulate, verify

# in the order `--help` lists them
SUBCOMMANDS = (simulate, init_db, migrate, verify, check_refs, report, dashboard)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cofi-eventlog",
        description="The batchExecutionLog event logger's tools: measure the write reduction (simulate), "
                    "carry out the migration from processing_logs (init-db, migrate, verify, check-refs), "
                    "and watch batches (report, dashboard).")
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


if __name__ == "__main__":
    sys.exit(main())
