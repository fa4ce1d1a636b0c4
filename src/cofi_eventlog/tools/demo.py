"""``cofi-eventlog demo``: log a small batch into the embedded default and print what landed."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..database import Database
from ..logger import EventLogger

STAGES = ("lid", "llm1", "llm2", "audit", "metadata")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="log a small batch and print what landed")
    parser.add_argument("--dsn", default="sqlite:///cofi_eventlog.db", help="where to log (default: %(default)s)")
    parser.add_argument("--files", type=int, default=100, help="files in the batch (default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    batch = f"demo-{int(time.time())}"
    started = time.perf_counter()
    with EventLogger(args.dsn) as log:
        log.batch_started(batch, total_files=args.files)
        for stage in STAGES:
            log.stage_started(batch, stage)
            for i in range(args.files):
                name = f"call-{i:05d}.wav"
                log.file_started(batch, stage, name, "10.0.0.12")
                if i % 37 == 36 and stage == "llm1":
                    log.file_error(batch, stage, name, TimeoutError("model timed out"), "10.0.0.12",
                                   payload={"attempt": 1})
                else:
                    log.file_completed(batch, stage, name, "10.0.0.12")
            log.progress(batch, stage, args.files, args.files)
            log.stage_completed(batch, stage)
        log.batch_completed(batch)
        caller = time.perf_counter() - started
        log.flush()
        stats = log.stats()
    with Database(args.dsn) as db:
        rows = db.fetchall(f"SELECT eventType, COUNT(*) FROM {db.name('batchExecutionLog')} "
                           "WHERE batchId = %s GROUP BY eventType ORDER BY eventType", (batch,))
    print(f"batch {batch} → {args.dsn}")
    for event_type, count in rows:
        print(f"  {event_type:<15} {count:>7}")
    print(f"{stats['enqueued']} events logged in {caller * 1000:.1f} ms of caller time; "
          f"{stats['written']} written in {stats['flushes']} INSERT statements, {stats['dropped']} dropped")
    return 0 if stats["written"] == stats["enqueued"] else 1
