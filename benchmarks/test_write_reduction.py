"""The seed's "DB inserts per 10K batch: ~200K → ~100K", counted by the server.

One ``cofi-eventlog simulate --files 10000`` run on MySQL/MariaDB, both shapes. The assertions are on
counts (rows, statements, losses); the time is recorded, never asserted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from cofi_eventlog.cli import main
from cofi_eventlog.tools.simulate.pipeline import Plan

FILES = 10_000

pytestmark = [pytest.mark.slow, pytest.mark.mysql]


@pytest.mark.benchmark(group="write reduction, 10K-file batch")
def test_rows_halve_and_statements_fall_to_batches(benchmark: Any, summary: list[str], mysql_dsn: str,
                                                   new_table: Callable[[], str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--files", str(FILES), "--dsn", mysql_dsn, "--table", new_table(),
            "--legacy-table", new_table(), "--json"]
    code = benchmark.pedantic(main, args=(argv,), rounds=1)
    result = json.loads(capsys.readouterr().out)
    legacy, buffered = result["legacy"], result["buffered"]
    events = Plan.make(FILES, 0.01).events()
    assert code == 0
    assert legacy["events"] == events and buffered["events"] == events + 1  # + its batch_start
    assert 99_000 <= events <= 100_000  # 1% of the files fail at some stage and leave the batch
    assert legacy["rows_inserted"] == 2 * events  # ~200K
    assert legacy["insert_statements"] == 2 * events
    assert buffered["rows_inserted"] == events + 1  # ~100K
    assert buffered["insert_statements"] <= 100
    assert legacy["lost"] == buffered["lost"] == 0
    for shape, r in result.items():
        benchmark.extra_info[shape] = r
    summary.append(f"10K-file batch: rows {legacy['rows_inserted']:,} → {buffered['rows_inserted']:,}, INSERT "
                   f"statements {legacy['insert_statements']:,} → {buffered['insert_statements']:,}, caller "
                   f"seconds {legacy['caller_seconds']:.1f} → {buffered['caller_seconds']:.3f}, wall seconds "
                   f"{legacy['wall_seconds']:.1f} → {buffered['wall_seconds']:.2f}")
