"""Where pipelines really run: spawn and forkserver pools after configure(), the end of a ``with Pool()``
block, SIGTERM from a container stop, an application's own SIGTERM handler, a broken environment."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import landed, rows_of

from cofi_eventlog import EventLogger, PreflightError

pytestmark = pytest.mark.mysql

QUIET = {"batch_size": 1_000_000, "flush_interval": 3600.0}  # nothing is written before close or SIGTERM


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
    """``Pool.__exit__`` calls terminate(): SIGTERM to workers whose events are all still queued."""
    EventLogger.configure(mysql_dsn, table=mysql_table, spool_dir=spool_dir, **QUIET)  # type: ignore[arg-type]
    with multiprocessing.get_context(method).Pool(2) as pool:
        pids = pool.map(log_files, range(8), chunksize=1)
    assert len(set(pids)) == 2
    assert landed(mysql_dsn, mysql_table) == (2000, 2000, 2000)


def test_pool_terminate_loses_nothing(mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    EventLogger.configure(mysql_dsn, table=mysql_table, spool_dir=spool_dir, **QUIET)  # type: ignore[arg-type]
    pool = multiprocessing.get_context("spawn").Pool(2)
    pool.map(log_files, range(4), chunksize=1)
    pool.terminate()
    pool.join()
    assert landed(mysql_dsn, mysql_table) == (1000, 1000, 1000)


SIGTERMED = r"""
import os, signal, sys
from cofi_eventlog import EventLogger, close_all

dsn, table, spool_dir, own_handler = sys.argv[1:5]
if own_handler == "yes":
    def stop(signum, frame):  # the application's own handler, chaining the library's drain
        close_all()
        os.write(2, b"app handler ran\n")
        os._exit(7)
    signal.signal(signal.SIGTERM, stop)
EventLogger.configure(dsn, table=table, spool_dir=spool_dir, batch_size=1_000_000, flush_interval=3600)
os.write(1, b"ready\n")
i = 0
while True:
    EventLogger.file_started("term", "lid", f"f{i}")
    os.write(1, b"%d\n" % i)  # after the call returned
    i += 1
"""


def run_until_sigterm(args: list[str], returned: int) -> tuple[set[int], subprocess.CompletedProcess[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", SIGTERMED, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    reported: set[int] = set()
    while len(reported) < returned:
        reported.add(int(child.stdout.readline()))
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    reported.update(int(line) for line in out.split(b"\n") if line.strip().isdigit())
    return reported, subprocess.CompletedProcess(child.args, child.returncode, out, err)


def test_sigterm_writes_the_queue_then_ends_the_process_with_status_143(
        mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    """The process keeps logging while the loggers close: those calls are spooled, and the next logger
    replays them."""
    reported, done = run_until_sigterm([mysql_dsn, mysql_table, spool_dir, "no"], returned=3000)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    written_by_the_child = landed(mysql_dsn, mysql_table)[0]
    replayer = EventLogger(mysql_dsn, table=mysql_table, spool_dir=spool_dir)
    assert replayer.flush(timeout=30)
    replayer.close()
    rows, ids, files = landed(mysql_dsn, mysql_table)
    assert rows == ids == files >= len(reported) >= 3000  # every returned call, and maybe the one in flight
    assert written_by_the_child >= 3000


BLOCKED = r"""
import multiprocessing, os, sys
from cofi_eventlog import EventLogger

dsn, table, spool_dir = sys.argv[1:4]
EventLogger.configure(dsn, table=table, spool_dir=spool_dir, batch_size=1_000_000, flush_interval=3600)
for i in range(500):
    EventLogger.file_started("blocked", "lid", f"f{i}")
lock = multiprocessing.Lock()
lock.acquire()
os.write(1, b"ready\n")
lock.acquire()  # blocked for good in a semaphore, as a Pool worker waits for its next task
"""


def test_sigterm_drains_a_process_whose_main_thread_is_blocked_for_good(
        mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", BLOCKED, mysql_dsn, mysql_table, spool_dir],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 128 + signal.SIGTERM, err
    assert landed(mysql_dsn, mysql_table) == (500, 500, 500)


def test_an_application_s_own_sigterm_handler_is_kept_and_can_chain_the_drain(
        mysql_dsn: str, mysql_table: str, spool_dir: str) -> None:
    reported, done = run_until_sigterm([mysql_dsn, mysql_table, spool_dir, "yes"], returned=2000)
    assert done.returncode == 7 and b"app handler ran" in done.stderr
    rows, ids, _ = landed(mysql_dsn, mysql_table)
    assert rows == ids >= len(reported) >= 2000


def test_a_malformed_dsn_in_the_environment_never_raises_into_the_pipeline(
        mysql_dsn: str, mysql_table: str, tmp_path: Path) -> None:
    """Class-level calls spool what they cannot send; the pipeline's own exception is the one it sees;
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
    print(EventLogger.flush(timeout=5), EventLogger.stats()["spilled"])
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
