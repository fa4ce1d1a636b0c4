"""Errors grouped by stage, exception type and message shape (shapes.py), newest examples first."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .collect import ErrorEvent
from .shapes import shape, split_type
from .times import iso

EXAMPLES = 3
MAX_GROUPS = 100


@dataclass
class _Group:
    stage: str | None
    error_type: str | None
    shape: str
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)


def group_errors(errors: list[ErrorEvent]) -> tuple[list[dict[str, Any]], int]:
    """(the largest MAX_GROUPS groups, how many groups were left off). ``errors`` come newest first."""
    groups: dict[tuple[str | None, str | None, str], _Group] = {}
    for error in errors:
        error_type, rest = split_type(error.message, error.error_type)
        key = (error.stage, error_type, shape(rest))
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(*key)
        group.count += 1
        group.first = error.at if group.first is None else min(group.first, error.at)
        group.last = error.at if group.last is None else max(group.last, error.at)
        if len(group.examples) < EXAMPLES:
            group.examples.append({"event_id": error.event_id.hex(), "file": error.file, "gpu": error.gpu,
                                   "at": iso(error.at), "message": error.message})
    ranked = sorted(groups.values(), key=lambda g: (-g.count, -(g.last.timestamp() if g.last else 0)))
    shown = [{"stage": g.stage, "type": g.error_type, "shape": g.shape, "count": g.count, "first": iso(g.first),
              "last": iso(g.last), "examples": g.examples} for g in ranked[:MAX_GROUPS]]
    return shown, len(ranked) - len(shown)
