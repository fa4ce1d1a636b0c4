"""The dashboard's HTTP server (the standard library's, one thread per request).

Routes: ``/`` and ``/batches/<id>`` serve one page whose script draws the view from the JSON API;
``/api/batches``, ``/api/batches/<id>``, ``/api/batches/<id>/events/<event id hex>``; ``/static/…``.
Every response carries a Content-Security-Policy that allows this server's own script, style and
requests and nothing else, so stored text could not run as script even if it were ever put into markup
(the script only ever sets it as text). Each request reads through a read-only connection of its own.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from ...sinks import SinkError
from ..batchview import BatchViews, Reader, event
from .access import Gate

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cross-Origin-Resource-Policy": "same-origin"}
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
          "index.html": "text/html; charset=utf-8"}
MAX_LIMIT = 200


def load_assets() -> dict[str, tuple[bytes, str]]:
    """The page's files, shipped in the package (nothing is fetched from elsewhere)."""
    folder = resources.files(__package__) / "static"
    return {name: ((folder / name).read_bytes(), kind) for name, kind in ASSETS.items()}


class Dashboard:
    """What the handler needs: where to read, what to show, who may see it."""

    def __init__(self, dsn: str, table: str, token: str | None, *, quiet_after: float = 60.0) -> None:
        self.dsn = dsn
        self.table = table
        self.token = token
        self.gate = Gate(token, 0)
        self.views = BatchViews(table, quiet_after=quiet_after)
        self.assets = load_assets()

    def reader(self) -> Reader:
        return Reader(self.dsn, timeout=10.0)


def serve(dashboard: Dashboard, host: str, port: int) -> ThreadingHTTPServer:
    """A bound server (port 0 picks a free one); call serve_forever() on it."""
    handler = type("Handler", (_Handler,), {"dashboard": dashboard})
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server: ThreadingHTTPServer = type("Server", (ThreadingHTTPServer,), {"address_family": family})((host, port),
                                                                                                    handler)
    server.daemon_threads = True
    dashboard.gate = Gate(dashboard.token, server.server_address[1])  # the port bound, when 0 was asked
    return server


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "cofi-eventlog"
    sys_version = ""

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
            limit = min(MAX_LIMIT, max(1, int(query.get("limit", ["20"])[0])))
            self._read(lambda reader: self.dashboard.views.batches(reader, limit=limit))
        elif len(parts) == 3 and parts[:2] == ["api", "batches"]:
            self._read(lambda reader: self.dashboard.views.batch(reader, parts[2]))
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
