"""What the copy-and-check pass found, per batch and per row, and how it is told to a person.

A legacy row passes when the events table holds the event it maps to, equal in every column. Only legacy
rows still present are checked: events of another source table, or of legacy rows deleted since they were
copied, never make a batch fail.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_LISTED = 20  # rows listed per kind of problem; the rest are counted


@dataclass
class BatchTally:
    rows: int = 0  # legacy rows of the batch
    carried: int = 0  # rows whose event is stored, equal in every column
    errors: int = 0  # of those, error events

    @property
    def ok(self) -> bool:
        return self.rows == self.carried


@dataclass
class Outcome:
    batches: dict[str, BatchTally] = field(default_factory=dict)
    written: int = 0  # events written by this run
    present: int = 0  # events already stored, equal to their legacy row
    to_write: int = 0  # dry run: events that would be written
    counts: Counter[str] = field(default_factory=Counter)  # problem kind → rows
    listed: dict[str, list[str]] = field(default_factory=dict)  # problem kind → the first rows, described

    def _batch(self, batch: Any) -> BatchTally:
        return self.batches.setdefault(str(batch), BatchTally())

    def _problem(self, kind: str, batch: Any, text: str) -> None:
        self._batch(batch).rows += 1
        self.counts[kind] += 1
        lines = self.listed.setdefault(kind, [])
        if len(lines) < _LISTED:
            lines.append(text)

    def carried(self, batch: str, new: bool, error: bool) -> None:
        tally = self._batch(batch)
        tally.rows += 1
        tally.carried += 1
        tally.errors += error
        if new:
            self.written += 1
        else:
            self.present += 1

    def absent(self, batch: str, legacy_id: Any, *, to_write: bool) -> None:
        if to_write:
            self._batch(batch).rows += 1
            self.to_write += 1
        else:
            self._problem("missing", batch, f"legacy row id={legacy_id}: its event was written but is not there")

    def not_carried(self, batch: Any, legacy_id: Any, problem: str) -> None:
        self._problem("not carried", batch, f"legacy row id={legacy_id} (batch {batch}): {problem}")

    def differs(self, batch: str, legacy_id: Any, event_id: bytes, columns: list[str]) -> None:
        self._problem("differs", batch, f"legacy row id={legacy_id} (batch {batch}): its event X'{event_id.hex()}' "
                                        f"differs in {', '.join(columns)}")

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.batches.values())

    @property
    def ok(self) -> bool:
        return not self.counts

    def problems(self) -> list[str]:
        out = []
        for kind, count in self.counts.items():
            out.append(f"{count:,} row{'s' if count != 1 else ''} {kind}:")
            out += [f"  {line}" for line in self.listed[kind]]
            if count > len(self.listed[kind]):
                out.append(f"  … and {count - len(self.listed[kind]):,} more")
        return out

    def table(self, source: str, target: str, *, limit: int = 20) -> list[str]:
        """Per batch: legacy rows, and how many have their event. Every failing batch is shown; passing
        ones up to ``limit``."""
        failing = sorted((b, t) for b, t in self.batches.items() if not t.ok)
        passing = sorted((b, t) for b, t in self.batches.items() if t.ok)
        shown = failing + passing[:limit]
        heads = ("batch", f"rows in {source}", f"with their event in {target}", "error events")
        width = min(max([len(heads[0])] + [len(b) for b, _ in shown]), 40)
        lines = [f"  {heads[0]:<{width}}  {heads[1]}  {heads[2]}  {heads[3]}"]
        for batch, tally in shown:
            name = batch if len(batch) <= width else batch[: width - 1] + "…"
            lines.append(f"  {name:<{width}}  {tally.rows:>{len(heads[1])},}  {tally.carried:>{len(heads[2])},}  "
                         f"{tally.errors:>{len(heads[3])},}{'' if tally.ok else '  MISSING OR DIFFERENT'}")
        hidden = len(passing) - len(passing[:limit])
        if hidden:
            lines.append(f"  … {hidden:,} more batches, every row with its event")
        return lines
