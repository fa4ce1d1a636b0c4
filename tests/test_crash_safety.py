"""A call that has returned is safe from the death of its process, in the runtimes pipelines really use:
joblib/loky, Celery prefork, ProcessPoolExecutor, the OOM killer's SIGKILL, ``os._exit``, python as PID 1,
daemon threads at exit; and the application's signals stay its own (asyncio, its own SIGTERM handler, the
default death by SIGTERM).

Every test runs a real program with real packages, notes in a ledger (tests/crashkit.py) each call that
returned, lets the runtime end or die as it does, then collects as any later process of the same target
would (a fresh logger, ``flush()``, ``close()``), and checks that every returned call's event is in the
table exactly once and that nothing that was never called is. The workers let their events linger
(``crashkit.LINGER``), so that what lands is what the library made safe before the call returned.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import skip_or_fail
from crashkit import (
    REDIS_SERVER,
    Run,
    check,
    collect,
    count,
    missing_tool,
    redis_server,
    spool_files,
    wait_gone,
)

pytestmark = pytest.mark.mysql

STOP_WITHIN = 10.0  # seconds a program that handles SIGTERM may take to stop (generous; it takes well under 1)


def planned(batch: str, tasks: int, n: int) -> set[str]:
    return {f"{batch}/t{t}/e{i}" for t in range(tasks) for i in range(n)}


def start(tmp_path: Path, run: Run, source: str, *args: str, prefix: list[str] | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Write ``source`` as a program and start it with this interpreter, under ``prefix`` if given, with
    the run's environment plus ``env``."""
    program = tmp_path / "program.py"
    program.write_text(source)
    out = open(tmp_path / "output.txt", "wb")  # noqa: SIM115 — the child holds it; closed with the test
    try:
        return subprocess.Popen([*(prefix or []), sys.executable, str(program), *args], cwd=tmp_path,
                                env=run.env(**(env or {})), stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


def output(tmp_path: Path) -> str:
    path = tmp_path / "output.txt"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def finish(proc: subprocess.Popen[bytes], tmp_path: Path, timeout: float = 120.0) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the program did not end in {timeout} s:\n{output(tmp_path)}") from None


def stop(proc: subprocess.Popen[bytes], signum: int, within: float = STOP_WITHIN,
         again_after: float | None = None) -> int | None:
    """Send ``signum`` (and once more after ``again_after`` s if the program still runs, as an operator does
    when a worker says "Hitting Ctrl+C again will terminate all running tasks"); the exit status if the
    program ended within ``within`` s, else None (it is then SIGKILLed, as a container runtime does after
    its grace period)."""
    proc.send_signal(signum)
    try:
        if again_after is not None:
            try:
                return proc.wait(timeout=again_after)
            except subprocess.TimeoutExpired:
                proc.send_signal(signum)
        return proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


@pytest.fixture
def mysql_run(tmp_path: Path, mysql_dsn: str, mysql_table: str, request: pytest.FixtureRequest) -> Run:
    return Run.make(tmp_path, mysql_dsn, mysql_table, request.node.name[:100])


@pytest.fixture
def any_run(tmp_path: Path, backend: tuple[str, str], request: pytest.FixtureRequest) -> Run:
    dsn, table = backend
    return Run.make(tmp_path, dsn, table, request.node.name[:100])


# -- the test of the test: a normal exit -------------------------------------------------------------------
ONE_PROCESS = r"""
import os, signal, sys
import crashkit

mode, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
crashkit.configure_from_environment(flush_interval=0.5, batch_size=1000)  # the library's defaults
batch = os.environ["CRASHKIT_BATCH"]
for i in range(n):
    crashkit.log_returned(batch, f"{batch}/t0/e{i}")
    if mode == "sigkill" and i + 1 == k:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer ends a GPU worker, mid-batch
if mode == "os_exit":
    os._exit(0)
"""


def test_a_process_that_exits_normally_lands_every_returned_call(any_run: Run, tmp_path: Path) -> None:
    """The ledger and the count themselves: this one holds with any engine that drains at exit."""
    proc = start(tmp_path, any_run, ONE_PROCESS, "normal", "2000", "0")
    assert finish(proc, tmp_path) == 0, output(tmp_path)
    tally = check(any_run, "normal exit", flushed=collect(any_run), planned=planned(any_run.batch, 1, 2000))
    assert tally.returned == tally.rows == 2000


# -- 4. a worker that dies by SIGKILL or os._exit ------------------------------------------------------------
def test_a_worker_that_sigkills_itself_mid_batch_loses_no_returned_call(any_run: Run, tmp_path: Path) -> None:
    proc = start(tmp_path, any_run, ONE_PROCESS, "sigkill", "3000", "2000")
    assert finish(proc, tmp_path) == -signal.SIGKILL, output(tmp_path)
    tally = check(any_run, "SIGKILL mid-batch", flushed=collect(any_run), planned=planned(any_run.batch, 1, 3000))
    assert tally.returned == 2000


def test_os_exit_right_after_logging_loses_no_returned_call(any_run: Run, tmp_path: Path) -> None:
    proc = start(tmp_path, any_run, ONE_PROCESS, "os_exit", "2000", "0")
    assert finish(proc, tmp_path) == 0, output(tmp_path)
    tally = check(any_run, "os._exit after logging", flushed=collect(any_run),
                  planned=planned(any_run.batch, 1, 2000))
    assert tally.returned == 2000


# -- 1. joblib / loky ----------------------------------------------------------------------------------------
JOBLIB_RAISE = r"""
import os, sys
from joblib import Parallel, delayed
import crashkit

if __name__ == "__main__":
    crashkit.configure_from_environment()
    batch = os.environ["CRASHKIT_BATCH"]
    try:  # task 5 raises: joblib aborts the pool and loky SIGKILLs its workers
        Parallel(n_jobs=2)(delayed(crashkit.log_task)(batch, t, 100, 0.001, t == 5) for t in range(16))
    except crashkit.TaskFailed:
        sys.exit(0)
    sys.exit("no task raised")
"""

JOBLIB_KILL_WORKERS = r"""
import os, sys
from joblib.externals.loky import get_reusable_executor
import crashkit

if __name__ == "__main__":
    crashkit.configure_from_environment()
    batch = os.environ["CRASHKIT_BATCH"]
    executor = get_reusable_executor(max_workers=2)
    futures = [executor.submit(crashkit.log_task, batch, t, 100, 0.001) for t in range(16)]
    futures[3].result()
    executor.shutdown(wait=True, kill_workers=True)  # SIGKILL to workers in the middle of their tasks
    assert not all(f.done() and not f.cancelled() and f.exception() is None for f in futures), "none was killed"
"""


def run_joblib(run: Run, tmp_path: Path, how: str, **env: str) -> None:
    proc = start(tmp_path, run, JOBLIB_RAISE if how == "one task raises" else JOBLIB_KILL_WORKERS, env=env)
    assert finish(proc, tmp_path) == 0, output(tmp_path)
    assert not wait_gone(run.pids()), "loky workers outlived their executor"


@pytest.mark.parametrize("how", ["one task raises", "kill_workers"])
def test_joblib_loky_workers_killed_lose_no_returned_call(any_run: Run, tmp_path: Path, how: str) -> None:
    run_joblib(any_run, tmp_path, how)
    check(any_run, f"joblib {how}", flushed=collect(any_run), planned=planned(any_run.batch, 16, 100))


# -- 3. concurrent.futures.ProcessPoolExecutor ---------------------------------------------------------------
POOL_EXECUTOR = r"""
import multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor, wait
import crashkit

if __name__ == "__main__":
    method, per_child = sys.argv[1], int(sys.argv[2]) or None
    crashkit.configure_from_environment()
    batch = os.environ["CRASHKIT_BATCH"]
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(2, mp_context=context, max_tasks_per_child=per_child) as executor:
        # One task per worker at a time (CPython 3.11's executor hangs for good when a worker is recycled
        # while more tasks wait). The last task's worker is SIGKILLed, as the OOM killer does; the executor
        # then terminates the others.
        futures = []
        for wave in range(0, 10, 2):
            futures += [executor.submit(crashkit.log_task, batch, t, 100, 0.0005, False, t == 9)
                        for t in (wave, wave + 1)]
            wait(futures[-2:])
    assert futures[9].exception() is not None
"""


@pytest.mark.parametrize(("method", "per_child"), [("spawn", 0), ("forkserver", 0), ("spawn", 2)],
                         ids=["spawn", "forkserver", "spawn-max_tasks_per_child"])
def test_process_pool_executor_loses_no_returned_call(mysql_run: Run, tmp_path: Path, method: str,
                                                      per_child: int) -> None:
    proc = start(tmp_path, mysql_run, POOL_EXECUTOR, method, str(per_child))
    assert finish(proc, tmp_path) == 0, output(tmp_path)
    assert not wait_gone(mysql_run.pids()), "pool workers outlived their executor"
    check(mysql_run, f"ProcessPoolExecutor {method} max_tasks_per_child={per_child or None}",
          flushed=collect(mysql_run), planned=planned(mysql_run.batch, 10, 100))


# -- 2. Celery prefork -----------------------------------------------------------------------------------
CELERY_APP = r"""
import os
from celery import Celery
from cofi_eventlog import EventLogger
import crashkit

# configured in the app module, as a Celery user does
EventLogger.configure(os.environ["CRASHKIT_DSN"], table=os.environ["CRASHKIT_TABLE"],
                      spool_dir=os.environ["CRASHKIT_SPOOL"], **crashkit.options())

app = Celery("crash_app", broker=os.environ["CRASHKIT_BROKER"])
app.conf.update(worker_prefetch_multiplier=1, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True)


@app.task(name="crash.log_files")
def log_files(batch, task, n):
    return crashkit.log_task(batch, task, n, 0.002)
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    why = missing_tool(REDIS_SERVER, "redis-server")
    if why:
        skip_or_fail(why)
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


TASKS, PER_TASK = 40, 25


def run_celery(run: Run, tmp_path: Path, broker: str, signame: str, **extra: str) -> tuple[int | None, set[int]]:
    """A prefork worker (2 children, recycled every 3 tasks) on a queue of its own, stopped by ``signame``
    once a third of the calls returned. Returns its exit status and the children that outlived it."""
    from celery import Celery

    (tmp_path / "crash_app.py").write_text(CELERY_APP)
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    log = open(tmp_path / "output.txt", "wb")  # noqa: SIM115
    env = run.env(CRASHKIT_BROKER=broker, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "crash_app", "worker", "--pool=prefork", "--concurrency=2",
         "--max-tasks-per-child=3", "-Q", queue, "-n", f"{queue}@%h", "--loglevel=WARNING",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        client = Celery(broker=broker)
        for t in range(TASKS):
            client.send_task("crash.log_files", args=[run.batch, t, PER_TASK], queue=queue)
        client.close()
        run.wait_returned(TASKS * PER_TASK // 3, proc=worker)
        # a worker stayed in its shutdown after the first SIGQUIT once in about 20 runs here; a second
        # signal ends it, as the worker's own message says
        status = stop(worker, getattr(signal, signame), within=30, again_after=15)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return status, wait_gone(run.pids())


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGQUIT"], ids=["warm-shutdown", "cold-shutdown"])
def test_celery_prefork_recycled_and_stopped_loses_no_returned_call(
        mysql_run: Run, tmp_path: Path, broker: str, signame: str) -> None:
    status, survivors = run_celery(mysql_run, tmp_path, broker, signame)
    tally = count(mysql_run, f"Celery prefork {signame}", flushed=collect(mysql_run),
                  planned=planned(mysql_run.batch, TASKS, PER_TASK))
    assert status == 0, f"the worker's exit status was {status} (0 without the library)\n{output(tmp_path)}"
    assert not survivors, f"{len(survivors)} pool children outlived the worker"
    assert tally.returned > 0 and tally.ok(), tally.line()


@pytest.mark.parametrize("runtime", ["joblib", "celery"])
def test_the_harness_counts_what_flush_confirmed(mysql_run: Run, tmp_path: Path, runtime: str,
                                                 request: pytest.FixtureRequest) -> None:
    """The test of the tests above, which any engine passes: tasks note their calls only once flush() has
    said they are in the database. So the environment reached the workers, their processes were found,
    and the collection and the count are right; what the tests above find missing was lost."""
    if runtime == "joblib":
        run_joblib(mysql_run, tmp_path, "one task raises", CRASHKIT_FLUSH_FIRST="1")
        tasks, n = 16, 100
    else:
        run_celery(mysql_run, tmp_path, request.getfixturevalue("broker"), "SIGTERM", CRASHKIT_FLUSH_FIRST="1")
        tasks, n = TASKS, PER_TASK
    tally = check(mysql_run, f"harness: {runtime}, flushed first", flushed=collect(mysql_run),
                  planned=planned(mysql_run.batch, tasks, n), in_flight_bound=tasks * n)
    assert tally.returned >= tasks * n // 3


# -- 5. python as PID 1, stopped as a container is ---------------------------------------------------------
PID1_POOL = r"""
import multiprocessing, os
import crashkit

if __name__ == "__main__":
    crashkit.configure_from_environment()
    batch = os.environ["CRASHKIT_BATCH"]
    with multiprocessing.Pool(2) as pool:
        pool.starmap(crashkit.log_task, [(batch, t, 50, 0.002) for t in range(2000)], chunksize=1)
"""
GRACE = 3.0  # docker stop's grace period, shortened: SIGTERM, then SIGKILL


def _children(pid: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except FileNotFoundError:
            found = []
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"process {pid} started no child in {timeout} s")


def test_python_as_pid_1_stopped_with_sigterm_loses_no_returned_call(mysql_run: Run, tmp_path: Path) -> None:
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        skip_or_fail(f"unshare --pid --fork is not permitted here: {probe.stderr.strip()}")
    proc = start(tmp_path, mysql_run, PID1_POOL, prefix=["unshare", "--pid", "--fork", "--mount-proc"])
    try:
        (pid1,) = _children(proc.pid)
        mysql_run.wait_returned(300, proc=proc)
        os.kill(pid1, signal.SIGTERM)  # docker stop: SIGTERM to PID 1, SIGKILL after the grace period
        try:
            proc.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            os.kill(pid1, signal.SIGKILL)
        finish(proc, tmp_path, timeout=30)  # PID 1's death SIGKILLs the whole namespace
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    check(mysql_run, "PID 1 stopped", flushed=collect(mysql_run), planned=planned(mysql_run.batch, 2000, 50))


# -- 6. daemon threads still logging at exit --------------------------------------------------------------
DAEMON_THREADS = r"""
import os, threading, time
import crashkit

crashkit.configure_from_environment()
batch = os.environ["CRASHKIT_BATCH"]
counts = [0] * 4

def work(k):
    for i in range(5000):
        crashkit.log_returned(batch, f"{batch}/t{k}/e{i}")
        counts[k] = i + 1
        time.sleep(0.0005)

for k in range(4):
    threading.Thread(target=work, args=(k,), daemon=True).start()
while min(counts) < 200:
    time.sleep(0.005)
# the main thread ends: the interpreter shuts down while the daemon threads still log
"""


def test_daemon_threads_logging_at_exit_lose_no_returned_call(any_run: Run, tmp_path: Path) -> None:
    proc = start(tmp_path, any_run, DAEMON_THREADS)
    assert finish(proc, tmp_path) == 0, output(tmp_path)
    files = spool_files(any_run)
    check(any_run, "daemon threads at exit", flushed=collect(any_run), planned=planned(any_run.batch, 4, 5000),
          threads=4)
    assert files < 50, f"{files} files in the spool folder after one process: calls after close made a file each"


# -- 7. asyncio with its own SIGTERM handler --------------------------------------------------------------
ASYNCIO_APP = r"""
import asyncio, os, signal, sys
import crashkit

crashkit.configure_from_environment()
batch = os.environ["CRASHKIT_BATCH"]
handled = getattr(signal, sys.argv[1])

async def main():
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(handled, stopping.set)  # after configure()
    i = 0
    while not stopping.is_set():
        crashkit.log_returned(batch, f"{batch}/t0/e{i}")
        i += 1
        if i % 20 == 0:
            await asyncio.sleep(0.001)
    return 5

sys.exit(asyncio.run(main()))
"""


@pytest.mark.parametrize(("handled", "expected"), [("SIGTERM", 5), ("SIGINT", -signal.SIGTERM)],
                         ids=["handles-SIGTERM", "handles-SIGINT-only"])
def test_asyncio_app_with_signal_handlers_stops_on_sigterm_as_without_the_library(
        mysql_run: Run, tmp_path: Path, handled: str, expected: int) -> None:
    """Its own SIGTERM handler ends it with the status it chooses; one that handles only SIGINT dies by
    SIGTERM, at once, as any Python program does."""
    proc = start(tmp_path, mysql_run, ASYNCIO_APP, handled)
    mysql_run.wait_returned(500, proc=proc)
    status = stop(proc, signal.SIGTERM)
    tally = count(mysql_run, f"asyncio add_signal_handler({handled})", flushed=collect(mysql_run))
    assert status == expected, f"exit status {status} (None: still running {STOP_WITHIN} s after SIGTERM)\n" \
                               f"{output(tmp_path)}"
    assert tally.returned > 0 and tally.ok(), tally.line()


# -- 8. the application's own SIGTERM handler, and no handler at all ---------------------------------------
OWN_HANDLER = r"""
import atexit, os, signal, sys, time
import crashkit

crashkit.configure_from_environment()
batch = os.environ["CRASHKIT_BATCH"]

def on_sigterm(signum, frame):
    raise SystemExit(0)

signal.signal(signal.SIGTERM, on_sigterm)  # installed after configure()
atexit.register(lambda: open("atexit-ran", "w").close())
try:
    i = 0
    while True:
        crashkit.log_returned(batch, f"{batch}/t0/e{i}")
        i += 1
        if i % 50 == 0:
            time.sleep(0.001)
finally:
    open("finally-ran", "w").close()
"""

NO_HANDLER = r"""
import os, time
import crashkit

crashkit.configure_from_environment()
batch = os.environ["CRASHKIT_BATCH"]
i = 0
while True:
    crashkit.log_returned(batch, f"{batch}/t0/e{i}")
    i += 1
    if i % 50 == 0:
        time.sleep(0.001)
"""


def test_an_own_sigterm_handler_after_configure_keeps_its_exit_finally_and_atexit(
        mysql_run: Run, tmp_path: Path) -> None:
    proc = start(tmp_path, mysql_run, OWN_HANDLER)
    mysql_run.wait_returned(500, proc=proc)
    status = stop(proc, signal.SIGTERM)
    tally = count(mysql_run, "own SIGTERM handler raising SystemExit(0)", flushed=collect(mysql_run))
    ran = sorted(p.name for p in tmp_path.glob("*-ran"))
    assert (status, ran) == (0, ["atexit-ran", "finally-ran"]), f"exit status {status}\n{output(tmp_path)}"
    assert tally.returned > 0 and tally.ok(), tally.line()


def test_a_process_without_a_handler_dies_by_sigterm_and_loses_no_returned_call(
        any_run: Run, tmp_path: Path) -> None:
    proc = start(tmp_path, any_run, NO_HANDLER)
    any_run.wait_returned(500, proc=proc)
    status = stop(proc, signal.SIGTERM)
    tally = count(any_run, "no handler, SIGTERM", flushed=collect(any_run))
    assert status == -signal.SIGTERM, f"exit status {status} (-15: died by the signal)\n{output(tmp_path)}"
    assert tally.returned > 0 and tally.ok(), tally.line()
