"""``cofi-eventlog dashboard``: a live web page per batch, from batchExecutionLog alone, read-only.

``/`` lists the recent batches; ``/batches/<id>`` shows a batch's stages, a chart of completions and
errors, its GPUs and its errors grouped, and follows new events without a reload. The same figures are
JSON under ``/api/batches`` and ``/api/batches/<id>`` (and from ``report --json``). Everything it serves
ships in the package: it works offline. It binds 127.0.0.1 unless told otherwise; any other address
needs a token.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ...database import DEFAULT_TABLE
from ...sinks import SinkError
from ..batchview import Reader
from ..command import add_command
from ..dsn_option import add_dsn_option, require_dsn
from .access import TOKEN_ENV, check_bind
from .server import WORKERS, Dashboard, serve


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "dashboard", "a live web page per batch (read-only)", __doc__)
    add_dsn_option(parser)
    parser.add_argument("--table", default=DEFAULT_TABLE, help="events table (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8050, help="port (default: %(default)s; 0 picks a free one)")
    parser.add_argument("--token", help=f"required on every request; needed to bind anything but loopback "
                                        f"(default: ${TOKEN_ENV})")
    parser.add_argument("--quiet-after", type=float, default=60.0, metavar="SECONDS",
                        help="a batch with no event for this long is no longer running, an attempt open this "
                             "long is stuck (default: %(default)s)")
    parser.add_argument("--ended-after", type=float, metavar="SECONDS",
                        help="a batch quiet this long with work left has ended short (default: 10 × --quiet-after)")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help="requests answered at once, each with a database connection (default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        check_bind(args.host, token)
        dsn = require_dsn(args)
        with Reader(dsn) as reader:
            if not reader.table_exists(args.table):
                raise ValueError(f"{args.table} does not exist in {reader.dsn.redacted()}")
            shown = reader.dsn.redacted()
        if args.workers < 1:
            raise ValueError("--workers must be at least 1")
        server = serve(Dashboard(dsn, args.table, token, quiet_after=args.quiet_after, ended_after=args.ended_after),
                       args.host, args.port, workers=args.workers)
    except (SinkError, ValueError, OSError) as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return 2
    host, port = str(server.server_address[0]), server.server_address[1]
    where = f"[{host}]" if ":" in host else host
    print(f"dashboard: {args.table} in {shown} at http://{where}:{port}/ (read-only; Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
