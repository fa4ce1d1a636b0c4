"""What each GPU has in flight: attempts (``file_start``) that nothing followed yet.

Counts alone say how many attempts a GPU has open (starts − completions − errors, per stage); they do not
say which file, or since when, and that is what tells a hung GPU from a busy one. So for each GPU and stage
with attempts open, its newest NEWEST attempts are read in one statement, then the latest event of each of
those files; an attempt is open when no start, completion or error of its file and stage follows it. Both
statements read the batch's index range from the first start of those GPUs and stages on (for a running
batch, its current stage), the first from its newest end, and return at most MAX_FILES files: bounded
however large the batch.
An attempt older than its GPU and stage's NEWEST newest ones (a worker killed long ago) stays counted, but
unnamed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .reader import Reader
from .times import moment, stored

if TYPE_CHECKING:
    from .collect import Group

NEWEST = 8  # attempts looked at per GPU
MAX_FILES = 500  # files looked at in all
FILE_EVENTS = ("file_start", "file_complete", "error")


@dataclass(frozen=True)
class Attempt:
    gpu: str
    stage: str | None
    file: str
    started: datetime


def open_per_stage(groups: list[Group]) -> dict[tuple[str, str | None], int]:
    """Per GPU and stage, attempts without an outcome, from counts: starts − completions − errors."""
    per: dict[tuple[str, str | None], int] = defaultdict(int)
    for g in groups:
        if g.gpu is None or g.event_type not in FILE_EVENTS:
            continue
        sign = 1 if g.event_type == "file_start" else -1
        per[(g.gpu, g.stage)] += sign * (g.events - (g.nameless if g.event_type == "error" else 0))
    return {key: n for key, n in per.items() if n > 0}


def open_counts(groups: list[Group]) -> dict[str, int]:
    """Per GPU, attempts without an outcome."""
    out: dict[str, int] = defaultdict(int)
    for (gpu, _), n in open_per_stage(groups).items():
        out[gpu] += n
    return dict(out)


def in_flight(reader: Reader, t: str, batch: str, window: list[str], groups: list[Group]) -> list[Attempt]:
    busy = sorted(open_per_stage(groups), key=lambda key: (key[0], key[1] or ""))[:MAX_FILES // NEWEST]
    if not busy:
        return []
    since = stored(min(g.first for g in groups if g.event_type == "file_start" and (g.gpu, g.stage) in busy))
    parts, params = [], []
    for n, (gpu, stage) in enumerate(busy):  # per GPU and stage: its index range walked from the newest end
        parts.append(f"SELECT * FROM (SELECT gpuIp, stage, fileName, createdAt, eventId FROM {t} WHERE batchId = %s "
                     f"AND eventType = 'file_start' AND createdAt BETWEEN %s AND %s AND gpuIp = %s AND "
                     f"{'stage = %s' if stage is not None else 'stage IS NULL'} AND fileName IS NOT NULL "
                     f"ORDER BY createdAt DESC LIMIT {NEWEST}) p{n}")
        params += [batch, since, window[1], gpu, *([stage] if stage is not None else [])]
    rows = reader.fetchall(" UNION ALL ".join(parts), params)
    if not rows:
        return []
    starts = [(str(gpu), stage, str(file), _at(at), bytes(eid)) for gpu, stage, file, at, eid in rows]
    files = sorted({s[2] for s in starts})
    oldest = min(s[3] for s in starts)
    later: dict[tuple[Any, str], tuple[datetime, bytes]] = {}
    for stage, file, at, eid in reader.fetchall(
            f"SELECT stage, fileName, MAX(createdAt), MAX(eventId) FROM {t} WHERE batchId = %s "
            f"AND eventType IN ('file_start', 'file_complete', 'error') AND createdAt BETWEEN %s AND %s "
            f"AND fileName IN ({', '.join(['%s'] * len(files))}) GROUP BY stage, fileName",
            [batch, stored(oldest), window[1], *files]):
        later[(stage, str(file))] = (_at(at), bytes(eid))
    return [Attempt(gpu, stage, file, at) for gpu, stage, file, at, eid in starts
            if later.get((stage, file), (at, eid)) <= (at, eid)]


def _at(value: Any) -> datetime:
    when = moment(value)
    assert when is not None
    return when

