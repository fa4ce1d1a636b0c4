"""The report as text for a terminal. Stored text is shown escaped: a control character (an escape
sequence, a carriage return) in a file name or a message is printed as ``\\x1b``, ``\\r``, never sent
to the terminal as is."""

from __future__ import annotations

import unicodedata
from typing import Any

from .batchview import duration

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NOTES = {
    "stalled": "no event for {quiet}, with work left",
    "ended short": "ended short: it said it completed, or fell silent {quiet} ago, with work left",
    "unconfirmed": "no event for {quiet}; it declared no stages and never logged batch_complete: nothing says it "
                   "finished",
}


def printable(text: Any) -> str:
    """Text with control, format and line-separator characters escaped (bidi overrides among them)."""
    if text is None:
        return "-"
    out = []
    for char in str(text):
        if char == "\\":
            out.append("\\\\")
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(_NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"))
        else:
            out.append(char)
    return "".join(out)


def utc(stamp: str | None, *, date: bool = True) -> str:
    """'2026-11-29T15:40:45.608Z' → '2026-11-29 15:40:45 UTC' (or '15:40:45')."""
    if not stamp:
        return "-"
    day, clock = stamp.rstrip("Z").split("T")
    return f"{day} {clock[:8]} UTC" if date else clock[:8]


def _n(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render(report: dict[str, Any], *, top: int = 5) -> list[str]:
    r = report
    files = f"{_n(r['files'])} files (from {r['files_from']})" if r["files"] is not None else "no files"
    lines = [f"batch {printable(r['batch'])} in {r['table']}: {r['state'].upper()}",
             f"  {files}, {_n(r['events'])} events, {_n(r['errors'])} errors, "
             f"{_n(r['progress_pct'])}% done (of the {r['progress_of']})",
             f"  first event {utc(r['first_event'])}, last {utc(r['last_event'])} "
             f"(over {duration(r['seconds'])}; nothing for {duration(r['quiet_seconds'])})"]
    note = _NOTES.get(r["state"])
    if note:
        lines.append("  " + note.format(quiet=duration(r["quiet_seconds"])))
    if r["migrated"]:
        lines.append("  history migrated from processing_logs: no rates")
    elif r["events_per_second"] is not None:
        lines.append(f"  {_n(r['events_per_second'])} events/s, {_n(r['completions_per_minute'])} file "
                     "completions/min")
    lines += ["", f"  {'stage':<14} {'state':<11} {'files':>8} {'completed':>9} {'failed':>7} {'in flight':>9} "
                  f"{'waiting':>8} {'done':>6}  {'start UTC':<9} {'end UTC':<9} {'duration':>9} {'files/min':>9}  ETA"]
    for s in r["stages"]:
        pct = f"{s['progress_pct']:.1f}%" if s["progress_pct"] is not None else "-"
        eta = duration(s["eta_seconds"]) if s["eta_seconds"] is not None else "-"
        if s["no_progress_seconds"] is not None:
            eta = f"no progress for {duration(s['no_progress_seconds'])}"
        lines.append(f"  {_clip(printable(s['stage']), 14):<14} {s['state']:<11} {_n(s['total']):>8} "
                     f"{_n(s['completed']):>9} {_n(s['failed']):>7} {_n(s['in_flight']):>9} {_n(s['waiting']):>8} "
                     f"{pct:>6}  {utc(s['first_event'], date=False):<9} {utc(s['end'], date=False):<9} "
                     f"{duration(s['seconds']):>9} {_n(s['files_per_minute']):>9}  {eta}")
    lines += ["", *_errors(r, top), "", *_gpus(r)]
    return lines


def _errors(r: dict[str, Any], top: int) -> list[str]:
    groups = r["error_groups"]
    if not r["errors"]:
        return ["errors: none"]
    sampled = f", the newest {_n(r['errors_grouped'])} grouped" if r["errors_grouped"] < r["errors"] else ""
    lines = [f"errors: {_n(r['errors'])}{sampled}; by stage, type and message"
             f"{f' (the {top} largest of {len(groups)} groups)' if len(groups) > top else ''}:"]
    for g in groups[:top]:
        lines.append(f"  {g['count']:>7,}  {_clip(printable(g['stage']), 14):<14} "
                     f"{_clip(printable(g['type']), 22):<22} {_clip(printable(g['shape']), 80)}")
        e = g["examples"][0]
        lines.append(f"{'':11}e.g. {_clip(printable(e['file']), 60)} on {printable(e['gpu'])} at "
                     f"{utc(e['at'], date=False)}: {_clip(printable(e['message']), 80)}")
    return lines


def _gpus(r: dict[str, Any]) -> list[str]:
    if not r["gpus"]:
        return ["GPUs: none recorded"]
    lines = [f"  {'gpu':<18} {'state':<7} {'events':>8} {'completed':>9} {'failed':>7} {'files/min':>9}  "
             "last seen  in flight"]
    for g in r["gpus"]:
        doing = ""
        if g["current"] is not None:
            doing = (f"{g['in_flight']}, {_clip(printable(g['current']['file']), 40)} in "
                     f"{printable(g['current']['stage'])} for {duration(g['oldest_in_flight_seconds'])}")
        elif g["in_flight"]:
            doing = str(g["in_flight"])
        state = g["state"].upper() if g["stuck"] else g["state"]
        lines.append(f"  {_clip(printable(g['gpu']), 18):<18} {state:<7} {_n(g['events']):>8} {_n(g['completed']):>9} "
                     f"{_n(g['failed']):>7} {_n(g['files_per_minute']):>9}  {utc(g['last_seen'], date=False):<9}  "
                     f"{doing}".rstrip())
    return lines


def render_recent_errors(found: dict[str, Any]) -> list[str]:
    more = "more than " if found["errors_more"] else ""
    lines = [f"errors since {utc(found['since'])}, all batches: {more}{_n(found['errors'])}"]
    if found["sampled"] < found["errors"]:
        lines.append(f"  (per batch: the newest {_n(found['sampled'])})")
    for b in found["batches"]:
        lines.append(f"  {b['errors']:>7,}  {printable(b['batch'])} (last {utc(b['last'], date=False)})")
    return lines
