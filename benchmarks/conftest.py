"""Benchmarks: ``pytest benchmarks/ --benchmark-only``. The default ``pytest`` run (testpaths = tests) never
collects this folder. MySQL benchmarks use COFI_EVENTLOG_TEST_DSN (default: the local MariaDB)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cofi_eventlog.database import Database

MYSQL_DSN = os.environ.get("COFI_EVENTLOG_TEST_DSN", "mysql://root@127.0.0.1:3306/test")
SUMMARY: list[str] = []  # one line per benchmark, printed after pytest-benchmark's table


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section("cofi-eventlog figures")
        for line in SUMMARY:
            terminalreporter.write_line(line)


@pytest.fixture
def summary() -> list[str]:
    """Append a line to print at the end of the run (per-call and per-event figures)."""
    return SUMMARY


@pytest.fixture(scope="session", autouse=True)
def _private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the loggers' default spool out of the user's home."""
    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    yield
    if old is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = old


@pytest.fixture(scope="session")
def mysql_dsn() -> str:
    try:
        Database(MYSQL_DSN, timeout=3).close()
    except Exception as exc:
        message = f"MySQL at {MYSQL_DSN.split('@')[-1]} unreachable ({type(exc).__name__}: {exc})"
        if os.environ.get("COFI_EVENTLOG_REQUIRE_MYSQL") == "1":
            pytest.fail(message)
        pytest.skip(message + "; set COFI_EVENTLOG_TEST_DSN")
    return MYSQL_DSN


@pytest.fixture
def new_table(mysql_dsn: str) -> Iterator[Callable[[], str]]:
    """Hands out unique table names on the MySQL server; every one is dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(f"bench_{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield make
    with Database(mysql_dsn) as db:
        for table in made:
            db.execute(f"DROP TABLE IF EXISTS {db.name(table)}")


@pytest.fixture
def sqlite_dsn(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bench.db'}"
