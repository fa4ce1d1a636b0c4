"""The parser of one ``cofi-eventlog`` subcommand."""

from __future__ import annotations

import argparse
from typing import Any


def add_command(subparsers: Any, name: str, summary: str, doc: str | None) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows its module's docstring, from the text after the usage line
    (which ends with two backquotes and a colon), line breaks kept."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=summary, description=(doc or "").split("``: ", 1)[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser
