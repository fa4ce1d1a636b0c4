"""What one log call costs the pipeline's thread, on a running logger, in the seed's call shape
(methods on the class, going to the process-wide logger).

Each round is CALLS calls in a loop, starting with the queue drained (the round's setup flushes), so the
figure is the call itself; the simulate command's "seconds inside log calls" gives the cost under a
full burst, with the writer draining alongside. Per call = the round's time / CALLS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import repeat
from typing import Any

import pytest

from cofi_eventlog import EventLogger

CALLS = 1000
ROUNDS = 300


@pytest.fixture
def running(sqlite_dsn: str) -> Iterator[type[EventLogger]]:
    """The process-wide logger, its writer thread started and its database connected."""
    EventLogger.configure(sqlite_dsn)
    EventLogger.batch_started("bench", total_files=CALLS)
    assert EventLogger.flush(30)
    yield EventLogger
    EventLogger.close()


def drained() -> None:
    assert EventLogger.flush(30)


def per_call(benchmark: Any, summary: list[str], name: str, calls: Callable[[], None]) -> None:
    benchmark.pedantic(calls, setup=drained, rounds=ROUNDS, warmup_rounds=5)
    if benchmark.disabled:  # run once as a smoke test (plain `pytest benchmarks/`): no figures
        return
    median_us = benchmark.stats.stats.median / CALLS * 1e6
    benchmark.extra_info["median_us_per_call"] = round(median_us, 3)
    summary.append(f"{name}: median {median_us:.2f} µs per call ({ROUNDS} rounds of {CALLS} calls)")


@pytest.mark.benchmark(group="caller cost, per 1000 calls")
def test_file_error_with_payload(benchmark: Any, summary: list[str], running: type[EventLogger]) -> None:
    payload = {"call_id": "call-000042.wav", "stage": "lid", "attempt": 1, "gpu_ip": "10.0.0.12"}
    error = "TimeoutError: lid model did not answer within 30 s"

    def calls() -> None:  # looked up on the class at every call, as the seed's call sites do
        for _ in repeat(None, CALLS):
            running.file_error("batch-2024-06-01", "lid", "call-000042.wav", error, "10.0.0.12", payload=payload)

    per_call(benchmark, summary, "EventLogger.file_error(..., payload=...)", calls)
    assert running.stats()["dropped"] == 0


@pytest.mark.benchmark(group="caller cost, per 1000 calls")
def test_progress(benchmark: Any, summary: list[str], running: type[EventLogger]) -> None:
    def calls() -> None:
        for i in range(CALLS):
            running.progress("batch-2024-06-01", "llm1", i, CALLS)

    per_call(benchmark, summary, "EventLogger.progress(...)", calls)
    assert running.stats()["dropped"] == 0
