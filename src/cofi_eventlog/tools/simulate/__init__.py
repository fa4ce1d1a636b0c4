"""``cofi-eventlog simulate``: the seed's before/after, measured by the database."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("simulate", help="run a batch in the legacy and buffered shapes and count writes")
    parser.set_defaults(run=lambda args: 0)
