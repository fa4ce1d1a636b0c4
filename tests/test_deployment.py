"""Where pipelines really run: spawn and forkserver pools after configure(), the end of a ``with Pool()``
block, a broken environment, secrets kept out of children's environments. (Deaths of every kind, and
signals, are in test_crash_safety.py.)"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import landed, rows_of

from cofi_eventlog import EventLogger, PreflightError

pytestmark = pytest.mark.mysql

QUIET = {"batch_size": 1_000_000, "flush_interval": 3600.0}  # nothing is written before close or a flush


def log_files(n: int) -> int:
    """A pool task in the seed's call shape: class-level calls, no configuration of its own."""
    for i in range(250):
        EventLogger.file_started("pool", "lid", f"task{n}-{i}")
    return os.getpid()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_configure_in_the_parent_reaches_spawn_and_forkserver_workers(
        mysql_dsn: str, mysql_table: str, spool_dir: str, method: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a worker falling back to the default would leave cofi_eventlog.db here
    EventLogger.configure(mysql_dsn, table=mysql_table, spool_dir=spool_dir, gpu_ip="10.0.0.9")
    with multiprocessing.get_context(method).Pool(2) as pool:
        pids = pool.map(log_files, range(8), chunksize=1)
        pool.close()
        pool.join()
    assert os.getpid() not in pids
    assert landed(mysql_dsn, mysql_table) == (2000, 2000, 2000)
    assert {r["gpuIp"] for r in rows_of(mysql_dsn, mysql_table)} == {"10.0.0.9"}  # the default travelled too
    assert not (tmp_path / "cofi_eventlog.db").exists()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_leaving_a_with_pool_block_terminates_the_workers_and_loses_nothing(
        mysql_dsn: str, mysql_table: str, spool_dir: str, method: str) -> None:
    """``Pool.__exit__`` calls terminate(): SIGTERM ends workers whose events are all still in their journals;
    the parent's logger (the same target) writes them at its next flush."""
    EventLogger.configure(mysql_dsn, table=mysql_table, spool_dir=spool_dir, **QUIET)  # type: ignore[arg-type]
    with multiprocessing.get_context(method).Pool(2) as pool:
        pids = pool.map(log_files, range(8), chunksize=1)
    assert len(set(pids)) == 2
    assert EventLogger.flush(timeout=30)
    assert landed(mysql_dsn, mysql_table) == (2000, 2000, 2000)


def test_pool_terminate_loses_nothing(mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    EventLogger.configure(mysql_dsn, table=mysql_table, spool_dir=spool_dir, **QUIET)  # type: ignore[arg-type]
    pool = multiprocessing.get_context("spawn").Pool(2)
    pool.map(log_files, range(4), chunksize=1)
    pool.terminate()
    pool.join()
    assert EventLogger.flush(timeout=30)
    assert landed(mysql_dsn, mysql_table) == (1000, 1000, 1000)


def test_a_malformed_dsn_in_the_environment_never_raises_into_the_pipeline(
        mysql_dsn: str, mysql_table: str, tmp_path: Path) -> None:
    """Class-level calls keep what they cannot send; the pipeline's own exception is the one it sees;
    ``cofi-eventlog spool replay`` delivers the events once a good DSN is known."""
    script = r"""
import logging, sys
from cofi_eventlog import EventLogger
logging.basicConfig()
for i in range(100):
    EventLogger.file_started("envdsn", "lid", f"f{i}")
try:
    raise KeyError("the pipeline's own error")
except KeyError as exc:
    EventLogger.file_error("envdsn", "lid", "f0", exc)
    print(EventLogger.flush(timeout=1), EventLogger.stats()["unwritten"])
"""
    env = {**os.environ, "COFI_EVENTLOG_DSN": "mysql://root@127.0.0.1:notaport/test",
           "COFI_EVENTLOG_OPTIONS": json.dumps({"table": mysql_table}), "XDG_STATE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "101"]
    assert "COFI_EVENTLOG_DSN is not a usable DSN" in done.stderr

    (folder,) = (tmp_path / "cofi-eventlog" / "spool").iterdir()
    replay = subprocess.run([sys.executable, "-m", "cofi_eventlog", "spool", "replay", "--folder", str(folder),
                             "--dsn", mysql_dsn], capture_output=True, text=True, timeout=60)
    assert replay.returncode == 0, replay.stderr
    assert "101 written" in replay.stdout
    assert landed(mysql_dsn, mysql_table) == (101, 101, 100)


def test_falling_back_to_the_embedded_default_says_so_once_naming_the_file(tmp_path: Path) -> None:
    script = "import logging; logging.basicConfig()\nfrom cofi_eventlog import EventLogger\n" \
             "for i in range(3): EventLogger.file_started('b', 'lid', f'f{i}')\nEventLogger.flush()"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFI_EVENTLOG_")}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("no database configured") == 1
    assert str(tmp_path / "cofi_eventlog.db") in done.stderr
    assert landed(f"sqlite:///{tmp_path / 'cofi_eventlog.db'}", "batchExecutionLog") == (3, 3, 3)


def test_preflight_names_what_is_wrong_at_start_up(mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    wrong = mysql_dsn.replace("root@", "root:s3cret-pw@")
    with pytest.raises(PreflightError, match="1045") as refused:
        EventLogger.configure(wrong, table=mysql_table, spool_dir=spool_dir, preflight=True)
    assert "s3cret-pw" not in str(refused.value)
    with pytest.raises(PreflightError, match=mysql_table):
        EventLogger(mysql_dsn, table=mysql_table, create_table=False, spool_dir=spool_dir).preflight()
    EventLogger.configure(mysql_dsn, table=mysql_table, spool_dir=spool_dir, preflight=True)  # made the table
    assert landed(mysql_dsn, mysql_table) == (0, 0, 0)
    assert "preflight" not in json.loads(os.environ["COFI_EVENTLOG_OPTIONS"])  # children do not preflight


def test_a_relative_sqlite_path_means_the_directory_the_logger_was_made_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    log = EventLogger("sqlite:///events.db", spool_dir=str(tmp_path / "spool"))
    monkeypatch.chdir(tmp_path / "b")
    log.file_started("b", "lid", "x")
    assert log.flush(10)
    log.close()
    assert (tmp_path / "a" / "events.db").exists() and not (tmp_path / "b" / "events.db").exists()


def test_the_readme_deploying_example_runs_as_written(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "README.md").read_text()
    example = text.split("## Deploying", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "pipeline.py").write_text(example)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFI_EVENTLOG_")}
    done = subprocess.run([sys.executable, "pipeline.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    rows = rows_of(f"sqlite:///{tmp_path / 'events.db'}", "batchExecutionLog")
    assert len(rows) == 200 and {r["gpuIp"] for r in rows} == {os.uname().nodename}


SHOW_ENVIRONMENT = r"""
import json, os
from cofi_eventlog import EventLogger
print(json.dumps({"where": EventLogger.default().stats()["dsn"], "env": dict(os.environ)}))
"""


def test_configure_keeps_the_password_out_of_children_s_environments(tmp_path: Path) -> None:
    secret = "s3cr3t-Pa55"
    EventLogger.configure(f"mysql://cofi:{secret}@db-host:3306/cofi", table="t", spool_dir=str(tmp_path / "s"))
    assert not any(secret in value for value in os.environ.values())
    reference = Path(os.environ["COFI_EVENTLOG_DSN_FILE"])
    assert (reference.stat().st_mode & 0o777) == 0o600 and secret in reference.read_text()
    child = subprocess.run([sys.executable, "-c", SHOW_ENVIRONMENT], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout)
    assert seen["where"] == "mysql://cofi:***@db-host:3306/cofi"  # the child logs where the parent said
    assert secret not in json.dumps(seen["env"])


def test_a_relative_sqlite_dsn_travels_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    EventLogger.configure("sqlite:///rel.db", spool_dir=str(tmp_path / "s"))
    child = subprocess.run([sys.executable, "-c", SHOW_ENVIRONMENT], capture_output=True, text=True, timeout=60,
                           cwd="/")
    assert json.loads(child.stdout)["where"] == f"sqlite:///{tmp_path / 'rel.db'}"
