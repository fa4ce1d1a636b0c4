"""What the crash-safety tests share: a ledger of the calls that returned, tasks for pool workers, a
private redis-server, and the count of what landed.

The ledger is how a test knows exactly which calls returned in processes that may be SIGKILLed: right
after a call returns, its process appends the event's file name to a file of its own (``<pid>.log`` in
the folder named by ``CRASHKIT_LEDGER``) with one ``os.write`` on an ``O_APPEND`` descriptor. The line is
in the page cache when ``os.write`` returns, so it outlives any death of the process. The file is opened
before the process's first call, so it also names every process that may have had a call in flight.

Child programs find their settings in the environment (``CRASHKIT_*``), which every kind of worker
inherits; the tests folder travels on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cofi_eventlog import EventLogger
from cofi_eventlog.database import Database

TESTS = Path(__file__).resolve().parent
STAGE = "lid"
# Events stay with the process for as long as a user may let them linger: whatever is safe must be safe
# because the call returned, not because the writer happened to have written it already.
LINGER: dict[str, Any] = {"flush_interval": 10.0, "batch_size": 100_000}
REDIS_SERVER = "/usr/bin/redis-server"

_fd: dict[int, int] = {}  # pid -> ledger descriptor (a forked child opens its own)


# -- in the child processes ----------------------------------------------------------------------------
def _ledger_fd() -> int:
    pid = os.getpid()
    fd = _fd.get(pid)
    if fd is None:
        path = os.path.join(os.environ["CRASHKIT_LEDGER"], f"{pid}.log")
        fd = _fd[pid] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return fd


def record(name: str) -> None:
    """Note durably that the call which logged ``name`` has returned."""
    os.write(_ledger_fd(), name.encode() + b"\n")


def log_returned(batch: str, name: str) -> None:
    """One event through the process-wide logger, then its line in the ledger."""
    fd = _ledger_fd()  # before the call: the ledger file names every process that called
    EventLogger.file_completed(batch, STAGE, name)
    os.write(fd, name.encode() + b"\n")


class TaskFailed(RuntimeError):
    """What the one failing task of a pool raises."""


def log_task(batch: str, task: int, n: int, pace: float = 0.0, fail: bool = False, die: bool = False) -> int:
    """A pool task: ``n`` events through the process-wide logger (configured by the parent, found through
    the environment), ``pace`` seconds apart; then raise, or die by SIGKILL as the OOM killer does.

    With ``CRASHKIT_FLUSH_FIRST=1`` the task records its calls only once ``flush()`` has said they are in
    the database: what any engine must then have landed, which proves the harness itself."""
    flush_first = os.environ.get("CRASHKIT_FLUSH_FIRST") == "1"
    names: list[str] = []
    for i in range(n):
        name = f"{batch}/t{task}/e{i}"
        if flush_first:
            _ledger_fd()
            EventLogger.file_completed(batch, STAGE, name)
            names.append(name)
        else:
            log_returned(batch, name)
        if pace:
            time.sleep(pace)
    if flush_first and EventLogger.flush(timeout=30):
        for name in names:
            record(name)
    if fail:
        raise TaskFailed(f"task {task} failed on purpose")
    if die:
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def options(**given: Any) -> dict[str, Any]:
    """LINGER, then ``given``, then the JSON object in ``CRASHKIT_OPTIONS`` (to try the tests with other
    settings, e.g. ``{"durability": "spool"}``)."""
    return {**LINGER, **given, **json.loads(os.environ.get("CRASHKIT_OPTIONS") or "{}")}


def configure_from_environment(**given: Any) -> EventLogger:
    """The parent's configure(), as a pipeline makes it at start-up."""
    env = os.environ
    return EventLogger.configure(env["CRASHKIT_DSN"], table=env["CRASHKIT_TABLE"],
                                 spool_dir=env["CRASHKIT_SPOOL"], **options(**given))


# -- in the test process -------------------------------------------------------------------------------
@dataclass
class Run:
    """One runtime's folders and environment."""

    dsn: str
    table: str
    spool_dir: str
    ledger: Path
    batch: str

    @classmethod
    def make(cls, tmp_path: Path, dsn: str, table: str, batch: str) -> Run:
        ledger = tmp_path / "ledger"
        ledger.mkdir()
        return cls(dsn, table, str(tmp_path / "spool"), ledger, batch)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(CRASHKIT_DSN=self.dsn, CRASHKIT_TABLE=self.table, CRASHKIT_SPOOL=self.spool_dir,
                   CRASHKIT_LEDGER=str(self.ledger), CRASHKIT_BATCH=self.batch,
                   PYTHONPATH=os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p), **extra)
        for key in ("COFI_EVENTLOG_DSN", "COFI_EVENTLOG_OPTIONS"):  # only what the child configures itself
            env.pop(key, None)
        return env

    def returned(self) -> list[str]:
        """Every name the ledger holds, in no particular order."""
        names: list[str] = []
        for path in self.ledger.glob("*.log"):
            text = path.read_text()
            names += text.splitlines() if text.endswith("\n") or not text else text.splitlines()[:-1]
        return names

    def returned_count(self) -> int:
        return sum(p.read_bytes().count(b"\n") for p in self.ledger.glob("*.log"))

    def pids(self) -> set[int]:
        """Every process that logged (in the test's own PID namespace)."""
        return {int(p.stem) for p in self.ledger.glob("*.log")}

    def wait_returned(self, at_least: int, timeout: float = 60.0, proc: subprocess.Popen[Any] | None = None) -> int:
        """Block until the ledger holds ``at_least`` names (the runtime is mid-run); fail if it never does."""
        deadline = time.monotonic() + timeout
        while (count := self.returned_count()) < at_least:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the program ended ({proc.returncode}) after {count} calls, before "
                                     f"{at_least}:\n{_output(proc)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"only {count} of {at_least} calls returned in {timeout} s")
            time.sleep(0.02)
        return count


def _output(proc: subprocess.Popen[Any]) -> str:
    try:
        out, err = proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError):
        return ""
    return f"{out or ''}{err or ''}"[-3000:]


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as dead (its files, and its locks, are released)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_gone(pids: Iterable[int], timeout: float = 30.0) -> set[int]:
    """Wait until every process has died; SIGKILL (and return) those still alive at the timeout, so that
    a test never leaves a worker behind."""
    left = set(pids)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        left = {p for p in left if alive(p)}
        if left:
            time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def collect(run: Run) -> bool:
    """What any later process of the same target does: a fresh logger, a flush, a close."""
    logger = EventLogger(run.dsn, table=run.table, spool_dir=run.spool_dir)
    try:
        return logger.flush(timeout=60)
    finally:
        logger.close()


@dataclass
class Tally:
    """For one run: how many calls returned, how many of those landed, and what else is in the table."""

    case: str
    returned: int = 0
    landed: int = 0  # returned calls with at least one row
    rows: int = 0
    distinct_ids: int = 0
    duplicated: int = 0  # (batch, stage, file, type) keys with more than one row
    in_flight: int = 0  # rows of calls that were made but not recorded as returned (killed in between)
    in_flight_bound: int = 0
    foreign: int = 0  # rows of names that were never called
    recorded_twice: int = 0  # a bug of the test itself
    flushed: bool = True
    missing: list[str] = field(default_factory=list)  # a few returned calls that did not land

    def ok(self) -> bool:
        return (self.landed == self.returned and self.duplicated == 0 and self.distinct_ids == self.rows
                and self.foreign == 0 and self.in_flight <= self.in_flight_bound and self.recorded_twice == 0
                and self.flushed)

    def line(self) -> str:
        return (f"{self.case}: calls returned {self.returned} / landed {self.landed} / rows {self.rows} / "
                f"distinct eventIds {self.distinct_ids}; duplicated {self.duplicated}, in flight {self.in_flight}"
                f" (≤ {self.in_flight_bound}), never called {self.foreign}, flush() {self.flushed}"
                + (f"; missing e.g. {self.missing}" if self.missing else ""))


def count(run: Run, case: str, *, flushed: bool, planned: set[str] | None = None, threads: int = 1,
          in_flight_bound: int | None = None) -> Tally:
    """Count the run's rows against its ledger. ``planned``: every name the program could have called
    (default: any name of the run's batch); a process may have one call per thread in flight (unless
    ``in_flight_bound`` says otherwise)."""
    names = run.returned()
    returned = set(names)
    bound = threads * len(run.pids()) if in_flight_bound is None else in_flight_bound
    tally = Tally(case, returned=len(returned), recorded_twice=len(names) - len(returned), flushed=flushed,
                  in_flight_bound=bound)
    with Database(run.dsn) as db:
        if not db.table_exists(run.table):
            keys: list[tuple[Any, ...]] = []
            tally.rows = tally.distinct_ids = 0
        else:
            t = db.name(run.table)
            keys = db.fetchall(f"SELECT batchId, stage, fileName, eventType, COUNT(*) FROM {t} "
                               f"GROUP BY batchId, stage, fileName, eventType")
            tally.rows, tally.distinct_ids = (int(v) for v in db.fetchall(
                f"SELECT COUNT(*), COUNT(DISTINCT eventId) FROM {t}")[0])
    in_table: set[str] = set()
    for batch, stage, name, _type, n in keys:
        in_table.add(name)
        if int(n) > 1:
            tally.duplicated += 1
        if name in returned:
            continue
        if batch == run.batch and stage == STAGE and (planned is None or name in planned) \
                and str(name).startswith(f"{run.batch}/"):
            tally.in_flight += 1
        else:
            tally.foreign += 1
    lost = returned - in_table
    tally.landed = len(returned) - len(lost)
    tally.missing = sorted(lost)[:3]
    report(tally)
    return tally


def check(run: Run, case: str, *, flushed: bool, planned: set[str] | None = None, threads: int = 1,
          in_flight_bound: int | None = None) -> Tally:
    """Assert that every returned call landed exactly once, and nothing else did."""
    tally = count(run, case, flushed=flushed, planned=planned, threads=threads, in_flight_bound=in_flight_bound)
    assert tally.returned > 0, f"no call returned: the test did not run its program ({tally.line()})"
    assert tally.ok(), tally.line()
    return tally


def report(tally: Tally) -> None:
    """With COFI_CRASH_REPORT set, append the tally there (one JSON object a line) for a before/after table."""
    path = os.environ.get("COFI_CRASH_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(asdict(tally)) + "\n")


def spool_files(run: Run) -> int:
    return sum(1 for p in Path(run.spool_dir).rglob("*") if p.is_file())


# -- a private redis-server ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """Debian's redis-server on a free port of its own, with no persistence; stopped by its PID. Yields
    its URL."""
    import redis

    port = _free_port()
    proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder), "--daemonize", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start ({proc.returncode})") from None
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def missing_tool(path: str, package: str) -> str | None:
    """Why a test cannot run here, or None; the reason says how to install what is missing."""
    if os.path.exists(path) or shutil.which(path):
        return None
    return f"{path} is missing: apt-get install {package}"
