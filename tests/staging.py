"""Incidents staged in batchExecutionLog: rows as the library writes them (time-ordered eventIds, UTC
createdAt), at times the test chooses, so a batch that hung for minutes takes no minutes to stage."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from cofi_eventlog.database import Database
from cofi_eventlog.sinks import iso_utc

STAGES = ["lid", "llm1", "llm2", "audit", "metadata"]
GPUS = ["10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"]
ORCHESTRATOR = "orchestrator-host"  # logs batch and stage events only (gpu_ip=socket.gethostname())


class Batch:
    """One batch's rows, added in any order at chosen times, then written at once."""

    def __init__(self, batch: str, now: datetime | None = None) -> None:
        self.batch = batch
        self.now = now or datetime.now(timezone.utc)
        self.rows: list[tuple[Any, ...]] = []
        self._node = int.from_bytes(os.urandom(4), "big")
        self._seq = 0

    def at(self, seconds_ago: float) -> datetime:
        return self.now - timedelta(seconds=seconds_ago)

    def add(self, seconds_ago: float, kind: str, stage: str | None = None, file: str | None = None,
            gpu: str | None = None, *, message: str | None = None, total: int | None = None,
            metadata: dict[str, Any] | None = None) -> None:
        when = self.at(seconds_ago)
        micros = int(when.timestamp() * 1_000_000)
        self._seq += 1
        event_id = ((micros * 1000) << 64 | self._node << 32 | self._seq).to_bytes(16, "big")
        self.rows.append((event_id, self.batch, stage, kind, file, message, gpu, None, total,
                          None if metadata is None else orjson.dumps(metadata).decode(), iso_utc(micros)))

    def start(self, seconds_ago: float, files: int, stages: list[str] | None = STAGES) -> None:
        """batch_start from the orchestrator, declaring the stages (as ``batch_started(stages=…)`` stores them)."""
        self.add(seconds_ago, "batch_start", gpu=ORCHESTRATOR, total=files,
                 metadata=None if stages is None else {"stages": stages})

    def stage(self, stage: str, files: list[str], begin_ago: float, seconds_per_file: float,
              *, said_complete: bool = True, skip: tuple[str, ...] = ()) -> float:
        """Files spread over the four GPUs, one at a time per GPU; returns when (seconds ago) it ended."""
        self.add(begin_ago, "stage_start", stage, gpu=ORCHESTRATOR)
        clock = {gpu: begin_ago for gpu in GPUS}
        for i, name in enumerate(files):
            if name in skip:
                continue
            gpu = GPUS[i % len(GPUS)]
            self.add(clock[gpu], "file_start", stage, name, gpu)
            clock[gpu] -= seconds_per_file
            self.add(clock[gpu], "file_complete", stage, name, gpu)
        end = min(clock.values())
        if said_complete:
            self.add(end, "stage_complete", stage, gpu=ORCHESTRATOR)
        return end

    def write(self, dsn: str, table: str) -> None:
        with Database(dsn) as db:
            db.create_events_table(table)
            db.executemany(db.insert_events_sql(table), self.rows)


def files(n: int) -> list[str]:
    return [f"call-{i:04d}.wav" for i in range(n)]
