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
    both = shapes == ["legacy", "buffered"]
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
    if any(r.pace is not None for r in results.values()):
        lines += _paced_lines(sqlite)
    out = [header, ""]
    head = f"{'':<27}" + "".join(f"{s:>14}" for s in shapes) + (f"{'legacy ÷ buffered':>20}" if both else "")
    out.append(head)
    for label, get, fmt in lines:
        values = [get(results[s]) for s in shapes]
        cells = "".join(f"{(fmt or _int)(v) if v is not None else '–':>14}" for v in values)
        ratio = f"{_ratio(values[0], values[1]):>20}" if both and fmt is not None else ""
        out.append(f"{label:<27}{cells}{ratio}")
    return "\n".join(out)


def _delay(r: ShapeResult, key: str) -> float | None:
    summary = r.watched.delay_summary() if r.watched is not None else None
    return float(summary[key]) if summary else None


def _paced_lines(sqlite: bool) -> list[tuple[str, Any, Any]]:
    lines: list[tuple[str, Any, Any]] = [
        ("statements per event", lambda r: r.tally.statements / r.events if r.events else None, lambda v: f"{v:.3f}"),
        ("worker CPU µs per event", lambda r: r.worker_cpu_seconds / r.events * 1e6 if r.events else None,
         lambda v: f"{v:,.0f}"),
        ("  after the first stage", lambda r: r.steady_cpu_us_per_event, lambda v: f"{v:,.0f}"),
        ("delay to visible, median s", lambda r: _delay(r, "median"), _seconds),
        ("delay to visible, p99 s", lambda r: _delay(r, "p99"), _seconds),
    ]
    if sqlite:
        lines.insert(1, ("transactions per event", lambda r: r.tally.transactions / r.events if r.events else None,
                         lambda v: f"{v:.3f}"))
    else:
        lines.append(("connections at once (max)",
                      lambda r: r.watched.library_connections_max if r.watched is not None else None, _int))
    return lines


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
    out += _paced_notes(results)
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


def _paced_notes(results: dict[str, ShapeResult]) -> list[str]:
    out: list[str] = []
    paced = [r for r in results.values() if r.pace is not None]
    if not paced:
        return out
    out.append("Worker CPU: each worker process's own user + system time (every thread: the stages' loop and the "
               "logger's writer), from its first call until its logger closed, summed over the workers and divided "
               "by their events; \"after the first stage\" leaves out the first stage, and with it the logger's "
               "one-time start (thread, connection, table check): what a long-running worker pays per event. "
               "Compare with the unlogged shape (--mode buffered,unlogged): the same pace with no logging.")
    watched = [r.watched for r in paced if r.watched is not None]
    if watched:
        out.append(f"Delay: from a call (its createdAt) to the first poll of the table that saw its row; the table "
                   f"was polled every {watched[0].poll_seconds:.2f} s, so a delay is high by at most that much.")
        if watched[0].library_connections_max is not None:
            out.append("Connections at once: the most connections the workers' logging opened that the server's "
                       "PROCESSLIST listed at one poll. " + "; ".join(
                           f"{r.shape}: {r.watched.library_connections_opened} opened in all, Threads_connected "
                           f"at most {r.watched.threads_above_baseline_max} above its value before the run"
                           for r in paced if r.watched is not None) + " (that one counts any other session too).")
    for r in paced:
        if r.watched is not None and r.watched.missed:
            out.append(f"{r.shape}: {r.watched.missed} rows were seen only by the reading after the run (their "
                       "writer did not send them in call order); their delay is taken to that reading, an "
                       "overstatement.")
    return out
