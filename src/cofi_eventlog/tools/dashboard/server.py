"""The dashboard's HTTP server: the standard library's request handler behind BoundedServer, which
reads request heads without a thread each and answers with a fixed number of worker threads.

Routes: ``/`` and ``/batches/<id>`` serve one page whose script draws the view from the JSON API;
``/api/batches``, ``/api/batches/<id>``, ``/api/batches/<id>/events/<event id hex>``; ``/static/…``.
Every response carries a Content-Security-Policy that allows this server's own script, style and
requests and nothing else, so stored text could not run as script even if it were ever put into markup
(the script only ever sets it as text). Each request reads through a read-only connection of its own.
"""

from __future__ import annotations

import errno
import io
import queue
import re
import resource
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from ...sinks import SinkError
from ..batchview import BatchViews, Reader, as_csv, event, failed_files
from .access import Gate

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cross-Origin-Resource-Policy": "same-origin"}
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
          "index.html": "text/html; charset=utf-8"}
MAX_LIMIT = 200
WORKERS = 8  # requests answered at once, each with a database connection of its own
QUEUE = 64  # complete requests waiting for a worker; past that, 503 at once
HEAD_TIMEOUT = 10.0  # seconds for a request head to arrive whole
IO_TIMEOUT = 30.0  # seconds for a worker's socket operations (writing the answer)
MAX_HEAD = 16 * 1024
MAX_WAITING = 4096  # connections whose head is still arriving; past that the oldest is closed
RESERVED_FILES = 64  # descriptors kept for the workers' sockets and database connections
BACKLOG = 512


def load_assets() -> dict[str, tuple[bytes, str]]:
    """The page's files, shipped in the package (nothing is fetched from elsewhere)."""
    folder = resources.files(__package__) / "static"
    return {name: ((folder / name).read_bytes(), kind) for name, kind in ASSETS.items()}


class Dashboard:
    """What the handler needs: where to read, what to show, who may see it."""

    def __init__(self, dsn: str, table: str, token: str | None, *, quiet_after: float = 60.0,
                 ended_after: float | None = None) -> None:
        self.dsn = dsn
        self.table = table
        self.token = token
        self.gate = Gate(token, 0)
        self.views = BatchViews(table, quiet_after=quiet_after, ended_after=ended_after)
        self.assets = load_assets()

    def reader(self) -> Reader:
        return Reader(self.dsn, timeout=10.0)


def serve(dashboard: Dashboard, host: str, port: int, *, workers: int = WORKERS) -> BoundedServer:
    """A bound server (port 0 picks a free one); call serve_forever() on it."""
    handler = type("Handler", (_Handler,), {"dashboard": dashboard})
    server = BoundedServer((host, port), handler, workers=workers)
    dashboard.gate = Gate(dashboard.token, server.server_address[1])  # the port bound, when 0 was asked
    return server


class _Writer(io.RawIOBase):
    """The handler's wfile: every write sent whole, within the socket's timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        return len(data)


@dataclass
class _Waiting:
    """A connection whose request head is still arriving."""

    sock: socket.socket
    address: Any
    deadline: float
    head: bytearray = field(default_factory=bytearray)


class BoundedServer:
    """An HTTP server that a crowd of idle or slow connections cannot hold up.

    One thread accepts connections and reads their request heads without blocking (selectors): a
    connection costs a buffer, not a thread, until its head is complete, and is closed when that takes
    longer than HEAD_TIMEOUT or grows past MAX_HEAD; past ``max_waiting`` (MAX_WAITING, or fewer when the
    process may open fewer files) the oldest is closed. Complete requests
    go to a fixed number of worker threads through a queue of at most QUEUE; when it is full the request is
    answered 503 at once. A worker checks the token before any other work, and writes its answer within
    IO_TIMEOUT. So at most ``workers`` requests read the database at once.
    """

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 workers: int = WORKERS) -> None:
        host, port = address
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(BACKLOG)
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self.handler = handler
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._waiting: dict[socket.socket, _Waiting] = {}
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        limit = MAX_WAITING if soft == resource.RLIM_INFINITY else soft - RESERVED_FILES - 2 * workers
        self.max_waiting = max(8, min(MAX_WAITING, limit))  # within the process's descriptors, whatever they are
        self._jobs: queue.Queue[tuple[socket.socket, Any, bytes] | None] = queue.Queue(QUEUE)
        self._workers = [threading.Thread(target=self._work, name=f"dashboard-worker-{i}", daemon=True)
                         for i in range(max(1, workers))]
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        for worker in self._workers:
            if not worker.is_alive():
                worker.start()
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(poll_interval):
                    if key.fileobj is self.socket:
                        self._accept()
                    else:
                        self._read(self._waiting[key.fileobj])  # type: ignore[index]
                self._expire(time.monotonic())
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._stopped.wait()

    def server_close(self) -> None:
        for waiting in list(self._waiting.values()):
            self._drop(waiting)
        self._selector.close()
        self.socket.close()
        for _ in self._workers:
            try:
                self._jobs.put_nowait(None)
            except queue.Full:
                break

    def _accept(self) -> None:
        for _ in range(BACKLOG):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: make room by closing the oldest waiting connection
                if exc.errno in (errno.EMFILE, errno.ENFILE) and self._waiting:
                    self._drop(min(self._waiting.values(), key=lambda w: w.deadline))
                    continue
                return
            sock.setblocking(False)
            if len(self._waiting) >= self.max_waiting:
                self._drop(min(self._waiting.values(), key=lambda w: w.deadline))
            self._waiting[sock] = _Waiting(sock, address, time.monotonic() + HEAD_TIMEOUT)
            self._selector.register(sock, selectors.EVENT_READ)

    def _read(self, waiting: _Waiting) -> None:
        try:
            data = waiting.sock.recv(8192)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(waiting)
            return
        waiting.head += data
        if b"\r\n\r\n" not in waiting.head and b"\n\n" not in waiting.head:
            if len(waiting.head) > MAX_HEAD:
                self._refuse(waiting, b"431 Request Header Fields Too Large")
            return
        self._selector.unregister(waiting.sock)
        del self._waiting[waiting.sock]
        try:
            self._jobs.put_nowait((waiting.sock, waiting.address, bytes(waiting.head)))
        except queue.Full:
            self._refuse(waiting, b"503 Service Unavailable", registered=False)

    def _expire(self, now: float) -> None:
        for waiting in [w for w in self._waiting.values() if w.deadline < now]:
            self._drop(waiting)

    def _refuse(self, waiting: _Waiting, status: bytes, *, registered: bool = True) -> None:
        try:
            waiting.sock.send(b"HTTP/1.0 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        self._drop(waiting, registered=registered)

    def _drop(self, waiting: _Waiting, *, registered: bool = True) -> None:
        if registered and self._waiting.pop(waiting.sock, None) is not None:
            self._selector.unregister(waiting.sock)
        waiting.sock.close()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            sock, address, head = job
            try:
                sock.setblocking(True)
                sock.settimeout(IO_TIMEOUT)
                self.handler((sock, head), address, self)  # type: ignore[arg-type]
            except Exception as exc:  # a client gone mid-answer, say: the next request is served all the same
                if not isinstance(exc, OSError):
                    print(f"dashboard: {type(exc).__name__}: {exc}", file=sys.stderr)
            finally:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "cofi-eventlog"
    sys_version = ""

    def setup(self) -> None:
        """The request head was read already (BoundedServer); the answer goes to the socket."""
        sock, head = self.request
        self.connection = sock
        self.rfile = io.BytesIO(head)
        self.wfile = _Writer(sock)  # type: ignore[assignment]

    def finish(self) -> None:
        """The server closes the socket."""

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _refuse_method(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only: GET and HEAD only\n", "text/plain; charset=utf-8",
                   extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: a query string may hold the token. Database errors are printed."""

    def _answer(self, *, head: bool) -> None:
        self._head = head
        url = urlsplit(self.path)
        gate = self.dashboard.gate
        given = parse_qs(url.query).get("token", [None])[0]
        if gate.token is not None and given is not None and gate.matches(given) and not url.path.startswith("/api/"):
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", extra={"Location": url.path or "/",
                                                                      "Set-Cookie": gate.cookie()})
            return
        if not gate.admits({k.lower(): v for k, v in self.headers.items()}):
            self._send(HTTPStatus.FORBIDDEN, b"forbidden: a token is required, or a loopback host name\n",
                       "text/plain; charset=utf-8")
            return
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        try:
            self._route(parts, parse_qs(url.query))
        except SinkError as exc:
            print(f"dashboard: {exc}", file=sys.stderr)
            self._json({"error": str(exc)}, HTTPStatus.SERVICE_UNAVAILABLE)
        except ValueError as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)

    def _route(self, parts: list[str], query: dict[str, list[str]]) -> None:
        assets = self.dashboard.assets
        if parts == [""] or (len(parts) == 2 and parts[0] == "batches" and parts[1]):
            self._send(HTTPStatus.OK, *assets["index.html"])
        elif len(parts) == 2 and parts[0] == "static" and parts[1] in assets:
            self._send(HTTPStatus.OK, *assets[parts[1]], extra={"Cache-Control": "no-cache"})
        elif parts == ["api", "batches"]:
            given = query.get("limit", ["20"])[0]
            if not given.isdigit() or not 1 <= int(given) <= MAX_LIMIT:
                raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
            self._read(lambda reader: self.dashboard.views.batches(reader, limit=int(given)))
        elif len(parts) == 3 and parts[:2] == ["api", "batches"]:
            self._read(lambda reader: self.dashboard.views.batch(reader, parts[2]))
        elif len(parts) == 4 and parts[:2] == ["api", "batches"] and parts[3] == "failed.csv":
            self._failed_csv(parts[2])
        elif len(parts) == 5 and parts[:2] == ["api", "batches"] and parts[3] == "events":
            self._read(lambda reader: event(reader, self.dashboard.table, parts[2], parts[4]))
        elif parts == ["favicon.ico"]:
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _read(self, question: Callable[[Reader], dict[str, Any] | None]) -> None:
        started = time.perf_counter()
        with self.dashboard.reader() as reader:
            answer = question(reader)
        took = {"Server-Timing": f"db;dur={(time.perf_counter() - started) * 1000:.1f}"}
        if answer is None:
            self._json({"error": "no events"}, HTTPStatus.NOT_FOUND, extra=took)
        else:
            self._json(answer, HTTPStatus.OK, extra=took)

    def _failed_csv(self, batch: str) -> None:
        with self.dashboard.reader() as reader:
            found = failed_files(reader, self.dashboard.table, batch)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", batch)[:100] or "batch"
        self._send(HTTPStatus.OK, as_csv(found).encode("utf-8"), "text/csv; charset=utf-8",
                   extra={"Cache-Control": "no-store",
                          "Content-Disposition": f'attachment; filename="failed-{name}.csv"'})

    def _json(self, body: Any, status: HTTPStatus, extra: dict[str, str] | None = None) -> None:
        self._send(status, orjson.dumps(body), "application/json; charset=utf-8",
                   extra={"Cache-Control": "no-store", **(extra or {})})

    def _send(self, status: HTTPStatus, body: bytes, kind: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**HEADERS, "Content-Type": kind, "Content-Length": str(len(body)), **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if not getattr(self, "_head", False):
            self.wfile.write(body)
