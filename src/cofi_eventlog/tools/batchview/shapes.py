"""An error message's shape: what stays when the numbers and ids that differ per file are folded.

``audio too short: 0.24 s`` and ``audio too short: 0.84 s`` have one shape, ``audio too short: <n> s``.
The exception type is the one the logger recorded (``metadata.error_type``), else a leading
``SomethingError:`` of the message, which is how a string built from an exception usually begins.
"""

from __future__ import annotations

import re

MAX_SHAPE = 200

_FOLDS = (
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I), "<id>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"0x[0-9a-f]+", re.I), "<n>"),
    (re.compile(r"(?<![A-Za-z_\d])\d+(?:[.,]\d+)*(?:e[-+]?\d+)?", re.I), "<n>"),  # not the 1 of llm1
)
_LEADING_TYPE = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Timeout|Warning|Fault))"
                           r"(?::\s*|\s*$)")


def split_type(message: str, recorded: str | None) -> tuple[str | None, str]:
    """(exception type, the message without a leading ``Type:`` that repeats it)."""
    match = _LEADING_TYPE.match(message)
    if match and (recorded is None or match.group(1).rsplit(".", 1)[-1] == recorded.rsplit(".", 1)[-1]):
        return recorded or match.group(1), message[match.end():]
    return recorded, message


def shape(message: str) -> str:
    """The first non-empty line with numbers, ids and addresses folded, at most MAX_SHAPE characters."""
    line = next((part.strip() for part in message.splitlines() if part.strip()), "")
    for pattern, mark in _FOLDS:
        line = pattern.sub(mark, line)
    return line if len(line) <= MAX_SHAPE else line[: MAX_SHAPE - 1] + "…"
