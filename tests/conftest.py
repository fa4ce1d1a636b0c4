"""Shared fixtures. MySQL tests use COFI_EVENTLOG_TEST_DSN (default: the local MariaDB) and skip when
it is unreachable, unless COFI_EVENTLOG_REQUIRE_MYSQL=1, where they fail instead."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cofi_eventlog.database import Database

MYSQL_DSN = os.environ.get("COFI_EVENTLOG_TEST_DSN", "mysql://root@127.0.0.1:3306/test")
REQUIRE_MYSQL = os.environ.get("COFI_EVENTLOG_REQUIRE_MYSQL") == "1"


def skip_or_fail(reason: str) -> None:
    """A test needing a system package that is missing: skip, saying how to install it; under CI=true (whose
    .ci/run installs it) fail instead, as the MySQL tests do with COFI_EVENTLOG_REQUIRE_MYSQL=1."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true forbids skipping)")
    pytest.skip(reason)


def _mysql_problem() -> str | None:
    try:
        Database(MYSQL_DSN, timeout=3).close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


_PROBLEM: list[str | None] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """The Galera tests' cluster takes about 12 s to start: begin now, while the other tests run."""
    if any(item.path.name == "test_galera.py" for item in session.items):
        from servers import start_galera_early

        start_galera_early()


@pytest.fixture(scope="session", autouse=True)
def _private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the default spool of every logger in the tests out of the user's home."""
    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    yield
    if old is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = old


@pytest.fixture(autouse=True)
def _own_environment() -> Iterator[None]:
    """EventLogger.configure() exports its settings to the environment (for child processes); keep each
    test's settings, and its process-wide logger, to that test."""
    from cofi_eventlog import EventLogger

    saved = {k: os.environ.get(k) for k in ("COFI_EVENTLOG_DSN", "COFI_EVENTLOG_OPTIONS")}
    yield
    if EventLogger._default is not None:
        EventLogger._default.close()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def mysql_dsn() -> str:
    """The MySQL DSN, or a skip (a failure under COFI_EVENTLOG_REQUIRE_MYSQL=1) when it is unreachable."""
    if not _PROBLEM:
        _PROBLEM.append(_mysql_problem())
    problem = _PROBLEM[0]
    if problem:
        message = f"MySQL at {MYSQL_DSN.split('@')[-1]} unreachable ({problem}); set COFI_EVENTLOG_TEST_DSN"
        if REQUIRE_MYSQL:
            pytest.fail(message + " — COFI_EVENTLOG_REQUIRE_MYSQL=1 forbids skipping")
        pytest.skip(message)
    return MYSQL_DSN


@pytest.fixture
def table_name() -> str:
    return f"evt_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def mysql_table(mysql_dsn: str, table_name: str) -> Iterator[str]:
    """A fresh table name on the MySQL server, dropped afterwards."""
    yield table_name
    with Database(mysql_dsn) as db:
        db.execute(f"DROP TABLE IF EXISTS {db.name(table_name)}")


@pytest.fixture
def spool_dir(tmp_path: Path) -> str:
    return str(tmp_path / "spool")


@pytest.fixture(params=["sqlite", "mysql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, table_name: str) -> Iterator[tuple[str, str]]:
    """(dsn, table) on each back-end in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.db'}", table_name
        return
    dsn = request.getfixturevalue("mysql_dsn")
    yield dsn, table_name
    with Database(dsn) as db:
        db.execute(f"DROP TABLE IF EXISTS {db.name(table_name)}")


def rows_of(dsn: str, table: str, where: str = "", params: tuple[object, ...] = ()) -> list[dict[str, object]]:
    """Every row of the table as a dict, oldest first."""
    with Database(dsn) as db:
        cols = db.columns(table)
        sql = f"SELECT * FROM {db.name(table)} {where} ORDER BY createdAt, eventId"
        return [dict(zip(cols, r, strict=True)) for r in db.fetchall(sql, params)]


def count_of(dsn: str, table: str) -> int:
    with Database(dsn) as db:
        return int(db.scalar(f"SELECT COUNT(*) FROM {db.name(table)}"))


@pytest.fixture
def fault_proxy(mysql_dsn: str) -> Iterator[object]:
    """A FaultProxy (tests/faultproxy.py) in front of the test MariaDB; ``proxy.dsn`` goes through it."""
    from faultproxy import FaultProxy

    with FaultProxy(mysql_dsn) as proxy:
        yield proxy


def landed(dsn: str, table: str, where: str = "", params: tuple[object, ...] = ()) -> tuple[int, int, int]:
    """(rows, distinct eventIds, distinct fileNames): exactly-once means all three agree."""
    with Database(dsn) as db:
        row = db.fetchall(f"SELECT COUNT(*), COUNT(DISTINCT eventId), COUNT(DISTINCT fileName) "
                          f"FROM {db.name(table)} {where}", params)[0]
        return int(row[0]), int(row[1]), int(row[2])


@pytest.fixture
def mysql_database(mysql_dsn: str) -> Iterator[str]:
    """The DSN of a database of its own on the MySQL server, dropped afterwards: for a test that must use
    the default table names (batchExecutionLog, processing_logs) without meeting other tests' tables."""
    name = f"cofi_t_{uuid.uuid4().hex[:12]}"
    with Database(mysql_dsn) as db:
        db.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield f"{mysql_dsn.rsplit('/', 1)[0]}/{name}"
    with Database(mysql_dsn) as db:
        db.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(params=["sqlite", "mysql"])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A DSN whose database holds nothing of any other test, on each back-end in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'own.db'}"
    return str(request.getfixturevalue("mysql_database"))
