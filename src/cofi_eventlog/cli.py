"""The ``cofi-eventlog`` command. Each subcommand lives in its own module under ``tools/`` and
exposes ``register(subparsers)``; this file only wires them together."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

# module names under cofi_eventlog.tools, in the order `--help` lists them
SUBCOMMANDS = ("demo", "simulate", "init_db", "migrate", "verify", "check_refs", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cofi-eventlog", description=__doc__)
    parser.add_argument("--version", action="version", version=f"cofi-eventlog {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"cofi_eventlog.tools.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"cofi_eventlog.tools.{name}":
                raise
            continue
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
