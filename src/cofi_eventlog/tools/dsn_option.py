"""The ``--dsn`` option every command shares.

The DSN comes from ``--dsn``, else from the file named by ``--dsn-file`` (its first line; for a password that
must not sit on the command line, where ``/proc/*/cmdline`` shows it), else from ``COFI_EVENTLOG_DSN``, the
variable the library itself reads.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

ENV = "COFI_EVENTLOG_DSN"


def add_dsn_option(parser: Any, *, default: str | None = None) -> None:
    """--dsn and --dsn-file, one or the other. ``default`` says what a command uses when neither is
    given and the variable is unset."""
    group = parser.add_mutually_exclusive_group()
    otherwise = f", else {default}" if default else ""
    group.add_argument("--dsn", help=f"mysql://user:pass@host:3306/db or sqlite:///path (default: ${ENV}{otherwise})")
    group.add_argument("--dsn-file", metavar="PATH", help="read the DSN from the first line of this file")


def dsn_from(args: argparse.Namespace) -> str | None:
    """The DSN the user gave, or None. A --dsn-file that cannot be read raises ValueError."""
    if args.dsn:
        return str(args.dsn)
    if getattr(args, "dsn_file", None):
        try:
            with open(args.dsn_file, encoding="utf-8") as handle:
                line = handle.readline().strip()
        except OSError as exc:
            raise ValueError(f"--dsn-file {args.dsn_file}: {exc.strerror}") from None
        if not line:
            raise ValueError(f"--dsn-file {args.dsn_file} is empty")
        return line
    return os.environ.get(ENV) or None


def require_dsn(args: argparse.Namespace) -> str:
    """The DSN, or ValueError saying the three ways to give one."""
    dsn = dsn_from(args)
    if dsn is None:
        raise ValueError(f"no database given: use --dsn, --dsn-file or ${ENV}")
    return dsn
