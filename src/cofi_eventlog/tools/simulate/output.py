"""What simulate prints on stdout: the results as a table or as JSON."""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import ShapeResult


def wrapped(paragraphs: list[str], width: int = 100) -> str:
    return "\n".join(textwrap.fill(p, width, subsequent_indent="  ", break_on_hyphens=False) for p in paragraphs)


def as_json(results: dict[str, ShapeResult]) -> str:
    return json.dumps({shape: result.as_json() for shape, result in results.items()}, indent=2)


def _int(value: float) -> str:
    return f"{int(value):,}"


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _ratio(a: float, b: float) -> str:
    if b <= 0:
        return "–" if a <= 0 else "∞"
    ratio = a / b
    return f"{ratio:,.1f}×" if ratio < 100 else f"{ratio:,.0f}×"


def table(results: dict[str, ShapeResult], header: str) -> str:
    """Each shape's figures side by side, with the ratio legacy ÷ buffered."""
    shapes = list(results)
    both = len(shapes) == 2
    sqlite = any(r.server_wide is None for r in results.values())
    lines: list[tuple[str, Any, Any]] = [
        ("events", lambda r: r.events, None),
        ("rows inserted", lambda r: r.tally.rows, _int),
        ("INSERT statements", lambda r: r.tally.statements, _int),
    ]
    if sqlite:
        lines.append(("transactions (commits)", lambda r: r.tally.transactions, _int))
    lines += [
        ("wall seconds (to durable)", lambda r: r.wall_seconds, _seconds),
        ("seconds inside log calls", lambda r: r.caller_seconds, _seconds),
        ("events lost", lambda r: r.lost, None),
    ]
    out = [header, ""]
    head = f"{'':<27}" + "".join(f"{s:>14}" for s in shapes) + (f"{'legacy ÷ buffered':>20}" if both else "")
    out.append(head)
    for label, get, fmt in lines:
        values = [get(results[s]) for s in shapes]
        cells = "".join(f"{(fmt or _int)(v):>14}" for v in values)
        ratio = f"{_ratio(values[0], values[1]):>20}" if both and fmt is not None else ""
        out.append(f"{label:<27}{cells}{ratio}")
    return "\n".join(out)


def notes(results: dict[str, ShapeResult]) -> list[str]:
    """How each figure was counted, and anything a reader should know about this run."""
    out: list[str] = []
    first = next(iter(results.values()))
    if first.server_wide is not None:
        out.append("Counted by the server: each connection's own Com_insert and Handler_write (SHOW SESSION STATUS, "
                   "read as it closed).")
        for shape, r in results.items():
            wide = r.server_wide or {}
            rows, statements = wide.get("Handler_write", 0), wide.get("Com_insert", 0)
            others = (rows - r.tally.rows, statements - r.tally.statements)
            seen = (f"; {others[0]:,} rows and {others[1]:,} statements of these came from other sessions on "
                    "this shared server" if any(others) else "; nothing else wrote meanwhile")
            out.append(f"Server-wide SHOW GLOBAL STATUS deltas, {shape}: Com_insert {statements:,}, "
                       f"Handler_write {rows:,}{seen}.")
    else:
        out.append("Counted by SQLite: statements with the connections' trace callback, rows with total_changes. "
                   "SQLite steps a prepared INSERT once per row, also under executemany, so there the saving shows "
                   "in transactions (each one a commit).")
    out.append("Lost = rows expected (legacy 2 per event, buffered 1) minus rows found by COUNT(*) for the run's "
               "batch id: " + ", ".join(f"{s} {r.batch_id}" for s, r in results.items()) + ".")
    workers = first.workers
    if workers > 1:
        out.append(f"Seconds inside log calls are summed over the {workers} worker processes.")
    for shape, r in results.items():
        if not r.flushed:
            out.append(f"{shape}: the logger did not confirm every event written within the flush timeout.")
        if r.tally.unread:
            out.append(f"{shape}: {r.tally.unread} connections broke before their counters could be read.")
    legacy = results.get("legacy")
    if legacy is not None and legacy.events:
        out.append(f"The legacy shape took {legacy.wall_seconds:.1f} s: "
                   f"{legacy.caller_seconds / legacy.events * 1e6:,.0f} µs per event on the caller's thread.")
    buffered = results.get("buffered")
    if buffered is not None and buffered.events:
        landed = (f"; every event was in the database {buffered.wall_seconds:.2f} s after the first call"
                  if buffered.flushed and buffered.lost == 0 else "")
        out.append(f"The buffered shape cost the caller {buffered.caller_seconds / buffered.events * 1e6:.2f} µs "
                   f"per event{landed}.")
    return out
