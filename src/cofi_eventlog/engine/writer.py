"""The writer: one thread per logger that moves events from journals into the database.

It reads the journals of its own process (the callers append to them), those it adopted (journals
whose process is gone) and, as the host's shared writer (see leadership.py), those of the other live
processes that wait for it; builds the rows, hands them to the sink in multi-row statements that mix
journals, and commits each journal past what the database has. While another process is the shared
writer, this one only follows: it counts what that writer committed in its journals, deletes those
done, asks for flushes through the journal header, and waits in line for the lock.

It writes once a batch is full, once the oldest waiting event has waited ``flush_interval`` (a linger,
as Kafka's producer has), when a flush asks, and when the logger closes. While the database is away
nothing moves: the events stay in their journals, and the database is tried again after an exponential,
jittered backoff (at once when a flush asks). Rows the database will never take are isolated and dead-
lettered (see isolate.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from ..events import EventIds
from ..rows import build_rows
from ..sinks.base import Row, Sink, SinkError
from .backoff import Backoff
from .diagnostics import Warner
from .isolate import Isolator
from .journal import Journal, cluster_mark
from .leadership import POLL, Leadership
from .peers import Peers
from .records import decode
from .spool import Spool
from .stats import WriterStats

PIPELINED = 4  # batches a busy writer hands the sink at once
FOLLOWER_LOOK = 1.0  # seconds between a follower's looks at its journals' headers while no flush waits
FOLLOWER_CLOSE = 5.0  # seconds a close without a timeout waits for the shared writer to write our journals
TOO_MANY_CONNECTIONS = 1040  # the server's errno: back-pressure like any outage, and counted


class Ticket:
    """A flush waiting: answered once the events of this process up to ``target`` and every orphan found
    after it was made are in the database; ``ok`` if nothing was dropped since the previous answer."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.scanned = False  # the folder was searched for orphans after this ticket was made
        self.orphans: set[str] = set()  # a follower's: journals of processes gone, for the shared writer
        self.ok = True
        self.done = threading.Event()


@dataclass
class Part:
    """Records taken from one journal."""
    journal: Journal
    stop: int  # the journal offset after its records
    count: int
    source: str  # own, peer (a live process's, for the shared writer), adopted, borrowed


@dataclass
class Chunk:
    parts: list[Part]
    rows: Sequence[Row]


class Writer:
    def __init__(self, own: deque[Journal], sink: Sink, spool: Spool, ids: EventIds, *, batch_size: int,
                 flush_interval: float, adopt_interval: float, idle_timeout: float, appended: Callable[[], int],
                 dropped: Callable[[], int], borrowed: Callable[[], list[Journal]], warn: Warner,
                 wake_at: list[int] | None = None, leadership: Leadership | None = None) -> None:
        self.own = own  # this process's journals, the one callers append to last
        self.sink = sink
        self.spool = spool
        self.ids = ids
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.adopt_interval = adopt_interval
        self.idle_timeout = idle_timeout
        self.appended = appended  # events the callers have put in the own journals so far
        self.committed = 0  # of those, how many are in the database (or dead-lettered)
        self._taken = 0  # of those, how many were taken to be written (committed, or on their way)
        self.wake = threading.Event()  # a batch is full
        self.urgent = threading.Event()  # a flush or the close: try the database even during a backoff
        self.stats = WriterStats()
        self.adopted: list[tuple[Journal, EventIds]] = []
        self.leadership = leadership  # None: this process writes its own journals, and only those
        self.host = Peers(spool.folder, leadership.key) if leadership is not None else None
        # own: writes its own journals; host: the host's shared writer; follower: another process is
        self.role = "own" if leadership is None else "follower"
        self.tickets: list[Ticket] = []
        self.stopping = False
        self.abandoned = False
        self.any_cluster = False  # the spool replay command: a person moves journals deliberately
        self._warn = warn
        self._dropped = dropped
        self._borrowed = borrowed  # closed loggers' journals in this process: written, never let go of
        self._wake_at = wake_at if wake_at is not None else [0]  # callers wake us when their count reaches it
        self._dropped_seen = 0
        self._isolator = Isolator(sink, self.stats, self._dead_letter)
        self._backoff = Backoff()
        self._down_until = 0.0
        self._next_adoption = 0.0
        self._last_write = time.monotonic()
        self._ahead: Chunk | None = None
        self._thread: threading.Thread | None = None
        self._exit_lock = threading.Lock()
        self._finished = False
        self._let_go: Callable[[], None] | None = None
        self._deadline = float("inf")
        self._asked_at_close = False

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cofi-eventlog-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None, let_go: Callable[[], None]) -> None:
        """Write what there is (one last try at the database, whatever the backoff says), adopt what
        orphans there are, and stop; then ``let_go`` of the journals. Past ``timeout`` the thread is left
        to finish its database call, and calls ``let_go`` itself when it has (the journals stay locked
        until then, so that nobody adopts what it may still be writing)."""
        self._deadline = time.monotonic() + (FOLLOWER_CLOSE if timeout is None else timeout)
        self.stopping = True
        self.hurry()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._exit_lock:
            if thread is not None and not self._finished:
                self.abandoned = True
                self._let_go = let_go
        self._answer(final=True)
        if not self.abandoned:
            self._release(let_go)

    def flush(self, timeout: float | None) -> bool:
        ticket = Ticket(self.appended())
        if not self.leading:  # the shared writer writes for us, and adopts: ask it to now
            marks = {j.cluster for j in self.own} - {None}
            ticket.orphans = self.spool.orphan_names(self._held(), marks.pop() if len(marks) == 1 else None)
            for journal in list(self.own):
                journal.request_flush()
        self.tickets.append(ticket)
        self.hurry()
        if not ticket.done.wait(timeout):
            try:
                self.tickets.remove(ticket)
            except ValueError:  # answered meanwhile
                return ticket.ok
            self._dropped_seen = self._dropped()  # this False answer tells of the drops so far too
            return False
        return ticket.ok

    def replay_now(self) -> bool:
        """Adopt and write every orphan from the calling thread, for a writer that was never started (the
        ``spool replay`` command; into any cluster). True when all of them are in the database."""
        self.any_cluster = True
        self._adopt()
        self._write(everything=True)
        self.sink.close()
        left = self.adopted
        for journal, _ in left:
            journal.release(remove=False)
        return not left

    def hurry(self) -> None:
        """Write now, whatever the batch, the linger or the backoff say (a flush, the close, a full queue)."""
        self.urgent.set()
        self.wake.set()

    def _release(self, let_go: Callable[[], None]) -> None:
        """Let go of the journals, then of the writer lock (so the next writer finds them free)."""
        let_go()
        if self.host is not None:
            self.host.release()
        if self.leadership is not None:
            self.leadership.release()

    @property
    def peers(self) -> list[Journal]:
        """The other live processes' journals, while we are the host's shared writer."""
        return self.host.journals if self.host is not None else []

    @property
    def leading(self) -> bool:
        """Whether this writer writes (its own journals at least): no shared writer, or we are it."""
        return self.role != "follower"

    # -- the loop ------------------------------------------------------------------------------------
    def _run(self) -> None:
        self._cycle(everything=False)  # at once: the first to start writes for the host
        while not self.stopping:
            (self.urgent if self._is_down() else self.wake).wait(self._linger())  # no spinning while down
            self.wake.clear()
            urgent = self.urgent.is_set()
            self.urgent.clear()
            if urgent:
                self._down_until = 0.0
            self._cycle(everything=urgent or bool(self.tickets))
        self._down_until = 0.0
        while not self._take_lead() and not self._followed_to_end():
            time.sleep(POLL / 5)
        if self.leading:
            self._cycle(everything=True, adopt=True)
        self.sink.close()
        with self._exit_lock:
            self._finished = True
            let_go = self._let_go
        if let_go is not None:  # the close gave up waiting for us
            self._release(let_go)

    def _followed_to_end(self) -> bool:
        """At close, as a follower: whether the shared writer has written all our journals hold (asked
        for at once), or the close's time is up (what is left is adopted once we let go)."""
        if not self._asked_at_close:
            self._asked_at_close = True
            for journal in self.own:
                journal.request_flush()
        self._follow()
        return all(j.committed >= j.end for j in self.own) or time.monotonic() >= self._deadline

    def _linger(self) -> float:
        """Seconds until there is something to do: the oldest waiting event's linger, the next adoption
        round, the end of a backoff, or an idle connection to give back."""
        if not self.leading:  # the lock's waiting thread wakes us the moment it is ours
            return POLL / 5 if self.tickets else FOLLOWER_LOOK
        now = time.monotonic()
        waits = [max(0.0, self._next_adoption - now), self.idle_timeout]
        if self.leadership is not None:
            waits.append(POLL)  # to find the other processes' new events
        if self._is_down():
            waits.append(self._down_until - now)
        elif self.adopted:
            return 0.0
        else:
            self._wake_at[0] = self._taken  # nothing waits: the next call wakes us, to start its linger...
            oldest = self._oldest_ns()
            if oldest is not None:  # ...unless one waits already (set first, looked after: none slips by)
                self._wake_at[0] = self._taken + self.batch_size - 1
                waits.append(self.flush_interval - (time.time_ns() - oldest) / 1e9)
        return max(0.0, min(waits))

    def _oldest_ns(self) -> int | None:
        oldest = None
        for journal in [*self.own, *self.peers]:
            record = journal.first()
            if record:
                try:
                    item = orjson.loads(record)
                    ns = int(item[10]) if isinstance(item, list) else int(item["row"][10]) * 1000
                except (orjson.JSONDecodeError, LookupError, TypeError, ValueError):
                    return 0  # unreadable: write (and so isolate) it now
                oldest = ns if oldest is None else min(oldest, ns)
        return oldest

    def _cycle(self, *, everything: bool, adopt: bool = False) -> None:
        """One round of work. Never raises: the thread must not die, and every ticket is answered."""
        try:
            if self.own:
                self.own[-1].prepare()
            if not self._take_lead():
                self._follow()
                self._answer()
                return
            asked = self.host is not None and self.host.asked()
            if asked:  # a flush of another process: it waits for the orphans too
                self._down_until = 0.0
                everything = True
            if adopt or asked or time.monotonic() >= self._next_adoption \
                    or (self.host is not None and self.host.changed()) or not all(t.scanned for t in self.tickets):
                self._adopt()
            if not self._is_down():
                self._write(everything=everything, lingered=not everything and self._lingered())
            self._answer()
            if self._last_write + self.idle_timeout <= time.monotonic():
                self.sink.close()  # a connection idle this long is given back; the next write reconnects
                self._last_write = float("inf")
        except Exception:
            self.stats.last_error = "writer: internal error (see the warning's traceback)"
            self._warn.exception("bug", "cofi_eventlog writer cycle failed; the events stay in their journals")

    def _lingered(self) -> bool:
        oldest = self._oldest_ns()
        return oldest is not None and time.time_ns() - oldest >= self.flush_interval * 1e9

    # -- the shared writer ---------------------------------------------------------------------------
    def _held(self) -> set[str]:
        """The names of the journals this process has open: none of them is another's orphan."""
        return {j.path.name for j in [*self.own, *(a for a, _ in self.adopted), *self.peers, *self._borrowed()]
                if j.path is not None}

    def _take_lead(self) -> bool:
        """Whether we write: no shared writer, or we hold its lock (taken now if it is free: the process
        that held it is gone or closed)."""
        if self.leadership is None or self.role == "host":
            return True
        if not (self.leadership.held or self.leadership.try_take()):
            if all(j.path is not None for j in self.own):
                self.leadership.wait_in_line(self.hurry)
                return False
            self._go_alone()  # a journal in memory (no file could be made): no other process can see it
        self._follow()
        for journal in self.own:  # from what the previous writer committed; the rest it may have sent
            journal.rewind()  # is sent again, and lands once (the eventId)
        self._taken = self.committed
        self._wake_at[0] = self._taken + self.batch_size - 1
        self._next_adoption = 0.0
        if self.leadership is not None:
            self.role = "host"
            self.stats.took_over += 1
            try:  # connect now: the other processes' oldest events may have waited their linger already
                self.sink.cluster()
            except SinkError:
                pass  # the first write finds the outage, and backs off
        return True

    def _go_alone(self) -> None:
        """Write our own journals ourselves from now on; the shared writer stops watching them when it
        sees their header no longer names it (what both send meanwhile lands once: the eventId)."""
        self._warn("alone", f"a journal could not be made in {self.spool.folder}; this process writes its own "
                            f"events from now on, not the host's shared writer")
        for journal in self.own:
            journal.clear_writer()
        if self.leadership is not None:
            self.leadership.release()
        self.leadership = self.host = None
        self.role = "own"

    def _follow(self) -> None:
        """While another process writes for us: count what it committed of our journals, delete those
        written and sealed, and drop from the tickets the orphans it has written (their files are gone)."""
        self._wake_at[0] = 1 << 62  # our callers need not wake us
        for journal in list(self.own):
            committed = journal.committed
            if committed > journal.read:
                written = journal.map[journal.read:committed].count(b"\n")
                self.committed += written
                self.stats.written += written
                journal.read = committed
            if journal.done() and journal is not self.own[-1]:
                self.own.remove(journal)
                journal.release(remove=True)
        for ticket in self.tickets:
            ticket.scanned = True  # orphans are the shared writer's to adopt: we wait for their files to go
            ticket.orphans = {name for name in ticket.orphans if (self.spool.folder / name).exists()}

    def _adopt(self) -> None:
        """Take every journal whose process is gone (or that a closed logger let go); as the shared
        writer, watch the live ones that wait for us too."""
        self._next_adoption = time.monotonic() + self.adopt_interval
        tickets = list(self.tickets)
        for journal in self.host.sort_out() if self.host is not None else []:
            self.adopted.append((journal, EventIds(journal.node)))
        for journal in self.spool.orphans(self._held(), self.host.key if self.host is not None else None):
            if not self._same_cluster(journal):
                journal.release(remove=False)
                continue
            if journal.watched:
                self.peers.append(journal)
                continue
            self.adopted.append((journal, EventIds(journal.node)))
            if journal.torn_bytes():
                self._warn("torn", f"{journal.path}: {journal.torn_bytes()} bytes of a record its process died "
                                   f"copying (its call had not returned) are ignored")
        for ticket in tickets:
            ticket.scanned = True

    # -- writing -------------------------------------------------------------------------------------
    def _write(self, *, everything: bool, lingered: bool = False) -> None:
        """Write what is due: whole batches, or ``everything`` (a flush, the close: what arrives meanwhile
        too). A linger that ran out writes what waits now, then whole batches only: at a busy host's
        pace new events arrive during every statement, and chasing them would send a stream of small
        ones. Stops at the first outage."""
        while not self.abandoned:
            chunk = self._ahead or self._take(everything or lingered)
            self._ahead, lingered = None, False
            if chunk is None:
                return
            if not chunk.rows:  # nothing readable in it (dead-lettered)
                self._commit(chunk)
                continue
            try:
                self._isolator.write(chunk.rows, (lambda: self._take_ahead(everything)))
            except SinkError as exc:
                self._went_down(exc)
                return
            self._up()
            self._commit(chunk)

    def _take(self, everything: bool) -> Chunk | None:
        """The next records to write, from as many journals as it takes to fill the statements: this
        process's first (oldest journal first), then the other live processes', adopted ones, and
        those of closed loggers. Unless ``everything``, the live journals give whole batches only (the
        rest lingers); the others are written as soon as found."""
        limit = PIPELINED * self.batch_size
        live = limit
        if not everything:
            waiting = self.appended() - self._taken + (self.host.waiting() if self.host is not None else 0)
            live = min(limit, waiting // self.batch_size * self.batch_size)
        parts: list[Part] = []
        rows: list[Row] = []
        for journal in list(self.own):
            if live <= 0:
                break
            live -= self._part(parts, rows, journal, live, self.ids, "own")
            if journal.done() and journal is not self.own[-1]:
                self.own.popleft()
                journal.release(remove=True)
        for journal in list(self.peers):
            if live <= 0:
                break
            live -= self._part(parts, rows, journal, live, EventIds(journal.node), "peer")
            if journal.done():  # its process deletes it
                self.peers.remove(journal)
                journal.release(remove=False)
        left = limit - sum(part.count for part in parts)
        for journal, ids in list(self.adopted):
            if left <= 0:
                break
            left -= self._part(parts, rows, journal, left, ids, "adopted")
            if journal.committed >= journal.end:
                self.adopted.remove((journal, ids))
                journal.release(remove=True)
        for journal in self._borrowed():
            if left <= 0:
                break
            left -= self._part(parts, rows, journal, left, EventIds(journal.node), "borrowed")
        return Chunk(parts, rows) if parts else None

    def _take_ahead(self, everything: bool) -> None:
        """While the server runs a statement, take the next batch and build its rows, so the server does
        not wait for them (the sink calls this back, knowing nothing of journals)."""
        if self._ahead is None and not self.abandoned:
            self._ahead = self._take(everything)

    def _part(self, parts: list[Part], rows: list[Row], journal: Journal, limit: int, ids: EventIds,
              source: str) -> int:
        """Take up to ``limit`` records of one journal into ``parts`` and ``rows``; how many."""
        data, count, stop = journal.take(limit)
        if not count:
            return 0
        if source == "own":
            self._taken += count
            self._wake_at[0] = self._taken + self.batch_size - 1
        items, unreadable = decode(data)
        for line in unreadable:  # not written by this library's journal code: kept for a person to look at
            self._dead_letter_text(line, f"unreadable record in journal {journal.path}")
        built, coerced = build_rows(items, ids)
        self.stats.coerced += coerced
        rows.extend(built)
        parts.append(Part(journal, stop, count, source))
        return count

    def _same_cluster(self, journal: Journal) -> bool:
        """Whether an orphan may be written here: its rows went to this sink's cluster, or to none yet.
        (Not known while the database does not answer: it is left for the next round.)"""
        if journal.cluster is None or self.any_cluster:
            return True
        try:
            mine = self.sink.cluster()
        except SinkError:
            return False
        if mine is not None and cluster_mark(mine) == journal.cluster:
            return True
        if mine is not None:
            self._warn("cluster", f"{journal.path} was written to another cluster than {mine}; not adopted "
                                  f"(cofi-eventlog spool replay --dsn ... moves it deliberately)")
        return False

    def _commit(self, chunk: Chunk) -> None:
        self._last_write = time.monotonic()
        unmarked = [p.journal for p in chunk.parts if p.source in ("own", "peer") and p.journal.cluster is None]
        if unmarked:  # their rows go to this cluster: so must their orphaned rest, should their process die
            try:
                mine = self.sink.cluster()
            except SinkError:  # marked at the next write
                mine = None
            if mine is not None:
                for journal in unmarked:
                    journal.mark_cluster(mine)
        for part in chunk.parts:
            part.journal.commit(part.stop)
            if part.source == "own":
                self.committed += part.count
            elif part.source == "peer":
                self.stats.for_others += part.count
            else:
                self.stats.adopted += part.count

    def _answer(self, *, final: bool = False) -> None:
        """Answer the tickets whose events are all in; at the close, every ticket."""
        for ticket in list(self.tickets):
            complete = self.committed >= ticket.target and all(j.committed >= j.end for j in self._borrowed()) \
                and (ticket.scanned and not self.adopted if self.leading else not ticket.orphans)
            if not (complete or final):
                continue
            dropped = self._dropped()
            ticket.ok = complete and dropped == self._dropped_seen
            self._dropped_seen = dropped
            try:
                self.tickets.remove(ticket)
            except ValueError:  # given up by its caller at its timeout
                continue
            ticket.done.set()

    # -- health --------------------------------------------------------------------------------------
    def _is_down(self) -> bool:
        return time.monotonic() < self._down_until

    def _up(self) -> None:
        if self._backoff.failures:
            self.stats.last_error = None  # recovered
            self._backoff.reset()
        self._down_until = 0.0

    def _went_down(self, exc: SinkError) -> None:
        """The events taken stay in their journals, to be taken again once the backoff is over."""
        self._ahead = None
        self._taken = self.committed
        self._wake_at[0] = self._taken + self.batch_size - 1
        for journal in [*self.own, *self.peers, *(a for a, _ in self.adopted), *self._borrowed()]:
            journal.rewind()
        self.stats.retries += 1
        if exc.code == TOO_MANY_CONNECTIONS:
            self.stats.too_many_connections += 1
        self.stats.last_error = str(exc)
        delay = self._backoff.next_delay()
        self._down_until = time.monotonic() + delay
        self._warn("down", f"database unavailable ({exc}); events kept in {self.spool.folder}, next try in "
                           f"{delay:.2f}s")

    def _dead_letter_text(self, record: bytes, reason: str) -> None:
        problem = self.spool.dead_letter({"reason": reason, "record": record.decode("utf-8", "replace")})
        if problem is None:
            self.stats.dead_lettered += 1
        else:
            self.stats.dropped_dead_letter += 1
        self._warn("dead-record", f"{reason}: kept in {self.spool.dead_letter_path}")

    def _dead_letter(self, row: Row, reason: str) -> None:
        """Keep a row the database refused; if even that fails, the row alone is dropped and counted."""
        event_id = row[0].hex()
        problem = self.spool.dead_letter({"reason": reason, "row": [event_id, *row[1:]]})
        self.stats.last_error = reason
        if problem is None:
            self.stats.dead_lettered += 1
            self._warn("dead", f"event {event_id} rejected by the database, written to "
                               f"{self.spool.dead_letter_path}: {reason}")
        else:
            self.stats.dropped_dead_letter += 1
            self._warn("dead-lost", f"event {event_id} rejected by the database ({reason}) and dropped: {problem}")
