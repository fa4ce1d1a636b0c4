"""Watching a paced run from outside the workers: when each event's row became visible in the table, and
how many of the library's connections the server held at once.

Delay. Each row's createdAt is the time of its call. A thread polls the table every POLL_SECONDS for rows
it has not seen yet; a row first seen by the poll sent at time T is counted as visible at T, so a delay
(T − createdAt) is high by at most one poll interval. A worker's rows become visible in the order of its
calls (its writer sends them in that order, each batch committed at once), so a poll need only read
from the oldest of the workers' newest visible calls on, and a worker whose events are all durable drops
out of the reading. A poll reads only the (batchId, createdAt) index, which holds the eventId too; the
worker behind a row is found from its eventId's logger node (bytes 8–11, one per process), looking up the
gpuIp of the first row of each node once. Once the run is over, every row of the batch is read once more:
a row the polls did not see (the order broke, say after a replay from the spool) is counted as missed and
given the time of that last reading, which can only overstate its delay.

Connections (MySQL/MariaDB). Each worker reports the thread id of every connection its logger opens; a
poll counts how many of them the server's PROCESSLIST still lists. ``Threads_connected`` above its value
before the run is sampled too: that one includes any other session on a shared server.
"""

from __future__ import annotations

import math
import queue
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ...database import Database
from ...sinks import iso_utc

POLL_SECONDS = 0.1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def micros(created: datetime | str) -> int:
    """createdAt (a naive UTC datetime from MySQL, ISO text from SQLite) as microseconds since the epoch."""
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    delta = created.replace(tzinfo=timezone.utc) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def percentile(ordered: list[float], share: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


@dataclass
class Watched:
    """What the sampler saw over one paced run."""

    delays: list[float] = field(default_factory=list)  # seconds from call to visible, one per row
    missed: int = 0  # rows the polls did not see, dated by the final reading
    polls: int = 0
    rows_read: int = 0  # rows the polls and the final reading returned, the already seen ones included
    poll_seconds: float = 0.0  # mean time between polls
    library_connections_max: int | None = None  # MySQL only
    library_connections_opened: int | None = None
    threads_above_baseline_max: int | None = None

    def delay_summary(self) -> dict[str, float | int] | None:
        if not self.delays:
            return None
        ordered = sorted(self.delays)
        return {"median": round(statistics.median(ordered), 4), "p99": round(percentile(ordered, 0.99), 4),
                "max": round(ordered[-1], 4), "rows_seen": len(ordered), "missed_by_polls": self.missed,
                "poll_seconds": round(self.poll_seconds, 4), "polls": self.polls, "rows_read": self.rows_read}


class Sampler(threading.Thread):
    """Polls one run's rows and the server's connections until :meth:`finish`."""

    def __init__(self, dsn: str, table: str, batch_id: str, gpu_ips: list[str], done: Any, connections: Any) -> None:
        super().__init__(name="simulate-sampler", daemon=True)
        self.db = Database(dsn)
        self.mysql = self.db.dialect == "mysql"
        self.batch_id = batch_id
        self.worker_of = {ip: w for w, ip in enumerate(gpu_ips)}
        self.done = done
        self.connections = connections
        self.watched = Watched()
        self._select = (f"SELECT eventId, createdAt FROM {self.db.name(table)} "
                        "WHERE batchId = %s AND createdAt >= %s")
        self._gpu_ip = f"SELECT gpuIp FROM {self.db.name(table)} WHERE eventId = %s"
        self._node_worker: dict[bytes, int | None] = {}
        self._start_us = time.time_ns() // 1000 - 1_000_000  # before any call, with room for a clock step
        self._newest: list[int | None] = [None] * len(gpu_ips)  # createdAt of each worker's newest visible row
        self._gone = [False] * len(gpu_ips)  # durable before the previous poll: nothing more to read
        self._seen: set[bytes] = set()
        self._ids: set[tuple[str, int, int]] = set()
        self._halt = threading.Event()
        self._error: BaseException | None = None
        if self.mysql:
            self._where = (self.db.conn.host, self.db.conn.port)
            self._baseline = self._threads_connected()
            self.watched.library_connections_max = self.watched.threads_above_baseline_max = 0

    def run(self) -> None:
        started = time.monotonic()
        try:
            while not self._halt.is_set():
                self.poll()
                self._halt.wait(POLL_SECONDS)
        except BaseException as exc:  # reported by finish(), in the parent's thread
            self._error = exc
        if self.watched.polls > 1:
            self.watched.poll_seconds = (time.monotonic() - started) / self.watched.polls

    def poll(self) -> None:
        durable = [bool(self.done[w]) for w in range(len(self._gone))]
        reading = [w for w, gone in enumerate(self._gone) if not gone]
        if reading:
            newest = [self._newest[w] for w in reading]
            lower = self._start_us if any(n is None for n in newest) else min(n for n in newest if n is not None)
            self._read(lower)
        self._gone = durable
        if self.mysql:
            self._count_connections()
        self.watched.polls += 1

    def _read(self, lower: int, *, last: bool = False) -> None:
        sent = time.time()
        rows = self.db.fetchall(self._select, (self.batch_id, iso_utc(lower)))
        self.watched.rows_read += len(rows)
        for event_id, created in rows:
            key = bytes(event_id)
            if key in self._seen:
                continue
            self._seen.add(key)
            at = micros(created)
            self.watched.delays.append(sent - at / 1e6)
            self.watched.missed += last
            w = self._worker(key)
            if w is not None and (self._newest[w] is None or at > (self._newest[w] or 0)):
                self._newest[w] = at

    def _worker(self, event_id: bytes) -> int | None:
        """The worker that logged a row: known by its logger's node once one of its rows was looked up.
        (Were the node not one per process, each row would be looked up: slower, the same answer.)"""
        node = event_id[8:12]
        if node not in self._node_worker:
            self._node_worker[node] = self.worker_of.get(self.db.scalar(self._gpu_ip, (event_id,)))
        return self._node_worker[node]

    def _threads_connected(self) -> int:
        return int(self.db.fetchall("SHOW GLOBAL STATUS LIKE 'Threads_connected'")[0][1])

    def _count_connections(self) -> None:
        while True:
            try:
                host, port, thread_id = self.connections.get_nowait()
            except queue.Empty:
                break
            self._ids.add((host, port, thread_id))
        listed = {int(r[0]) for r in self.db.fetchall("SELECT ID FROM information_schema.PROCESSLIST")}
        ours = sum(1 for host, port, i in self._ids if (host, port) == self._where and i in listed)
        w = self.watched
        w.library_connections_max = max(w.library_connections_max or 0, ours)
        w.threads_above_baseline_max = max(w.threads_above_baseline_max or 0,
                                           self._threads_connected() - self._baseline)

    def finish(self) -> Watched:
        """Stop polling, read every row of the batch once more, and return the figures."""
        self._halt.set()
        self.join()
        try:
            if self._error is not None:
                raise RuntimeError(f"the sampler failed: {self._error!r}") from self._error
            self.poll()  # the rows written since the last poll, the way every poll reads them
            self._read(self._start_us, last=True)
            if self.mysql:
                self._count_connections()  # the ids reported last, so that none is left out of the count
                self.watched.library_connections_opened = len(self._ids)
        finally:
            self.db.close()
        return self.watched

    def abandon(self) -> None:
        """Stop without the final reading (the run failed)."""
        self._halt.set()
        self.join()
        self.db.close()
