"""Opening a MySQL/MariaDB connection as the DSN says, and naming what went wrong by errno.

Every session the library opens is pinned to UTC (a TIMESTAMP column is then written and read as the
UTC the library means, whatever the server's zone) and to strict mode (a value that does not fit is an
error the sink has prevented, never a silent cut by the server). TLS and a unix socket come from the
DSN's options. With several hosts, the hosts are tried in turn from a given one, and a host is taken
only if it can be written to (read_only OFF; on Galera, wsrep_ready ON) and, once the sink has written,
it belongs to the same cluster as the host it first wrote to: a DSN that lists independent servers would
otherwise split one batch between them.
"""

from __future__ import annotations

import configparser
import os
import ssl
from dataclasses import dataclass
from typing import Any

import pymysql
from pymysql.optionfile import Parser

from .base import SinkError
from .dsn import Dsn

SESSION = "SET time_zone = '+00:00', sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')"
SETTINGS = ("max_allowed_packet", "wsrep_on", "wsrep_max_ws_rows", "wsrep_max_ws_size", "read_only", "hostname",
            "port", "datadir", "server_uuid")
WSREP_STATUS = ("wsrep_cluster_state_uuid", "wsrep_ready")

# Errors caused by a row's content: no retry will help, so the writer isolates and dead-letters the row.
# 4025 MariaDB JSON/CHECK constraint, 3819 MySQL CHECK, 3140 MySQL invalid JSON, 1366 bad string value,
# 1406 data too long, 1264 out of range, 1048 NULL in NOT NULL, 1292 bad datetime, 1153 packet too large.
ROW_ERRNOS = frozenset({1048, 1153, 1264, 1292, 1366, 1406, 3140, 3819, 4025})
# Everything else is transient: the documented ones (2002, 2003, 2006, 2013, 2055, 1040, 1053, 1205, 1213,
# 1290), configuration faults a person can fix (1045 wrong password, 1146 missing table), and Galera's:
# 1047 (this node is not in the primary component), 1213 (a certification conflict: the statement rolled
# back, and sending it again is harmless), 1105 and 1180 (the statement's write set is over
# wsrep_max_ws_size or wsrep_max_ws_rows: the writer splits the batch). After 2006/2013 the connection is
# dead and is replaced, never pinged.
WRITE_SET_ERRNOS = frozenset({1105, 1180})
# Errors after which the same server is worth asking again; after any other, another host is tried first.
SAME_HOST_ERRNOS = frozenset({1205, 1213}) | WRITE_SET_ERRNOS | ROW_ERRNOS
# SinkError.code of a host passed over: read-only, not ready, or of another cluster (not a server's errno).
WRONG_HOST = -1290


@dataclass
class Link:
    """An open connection, which of the DSN's hosts it reached, and the server settings that size statements."""

    conn: Any
    host: int
    settings: dict[str, str]

    @property
    def cluster(self) -> str:
        """Which cluster (or lone server) the connection reached: Galera's cluster state UUID, MySQL's
        server_uuid, else the server's host name, port and data folder (the same server through another
        route answers the same)."""
        settings = self.settings
        if settings.get("wsrep_on") == "ON" and settings.get("wsrep_cluster_state_uuid"):
            return f"galera cluster {settings['wsrep_cluster_state_uuid']}"
        if settings.get("server_uuid"):
            return f"server {settings['server_uuid']}"
        return f"server {settings.get('hostname')}:{settings.get('port')} {settings.get('datadir')}"

    def unwritable(self) -> str | None:
        """Why no row may be written through this connection, or None."""
        if self.settings.get("read_only") == "ON":
            return "is read-only (read_only = ON)"
        if self.settings.get("wsrep_on") == "ON" and self.settings.get("wsrep_ready") != "ON":
            return "is not ready (wsrep_ready = OFF: not in the cluster's primary component)"
        return None


def connect(dsn: Dsn, *, timeout: float = 10.0, autocommit: bool = True) -> Any:
    """A pymysql connection in utf8mb4, UTC and strict mode, every socket operation bounded by ``timeout``;
    to the first of the DSN's hosts that answers."""
    return open_link(dsn, timeout=timeout, autocommit=autocommit).conn


def open_link(dsn: Dsn, *, timeout: float = 10.0, autocommit: bool = True, first: int = 0,
              writable: bool = False, cluster: str | None = None) -> Link:
    """Try the hosts in turn from ``first``, wrapping around; raise the failures of all of them. With
    ``writable`` a host that cannot be written to is passed over, and with ``cluster`` one of another."""
    failures: list[SinkError] = []
    count = len(dsn.hosts)
    for step in range(count):
        index = (first + step) % count
        try:
            link = _open(dsn, index, timeout, autocommit)
        except SinkError as exc:
            failures.append(exc)
            continue
        problem = link.unwritable() if writable else None
        if problem is None and cluster is not None and link.cluster != cluster:
            problem = f"is not in the cluster written to so far ({link.cluster}, not {cluster})"
        if problem is None:
            return link
        link.conn.close()
        host, port = dsn.hosts[index]
        failures.append(SinkError(f"host {host}:{port} {problem}; nothing is written there", transient=True,
                                  code=WRONG_HOST))
    if count == 1:
        raise failures[0]
    raise SinkError("no host could take the rows: " + "; ".join(str(f) for f in failures), transient=True,
                    code=failures[-1].code)



def option_file(dsn: Dsn) -> dict[str, str]:
    """The settings of the DSN's MySQL option file (``read_default_file``) in its group; an unreadable file is
    named, and nothing of its content ever quoted (it holds a password)."""
    path = dsn.options.get("read_default_file")
    if not path:
        return {}
    full = os.path.expanduser(path)
    group = dsn.options.get("read_default_group", "client")
    parser = Parser()
    try:
        with open(full, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise SinkError(f"option file {full} unreadable: {exc.strerror}", transient=True) from None
    except (configparser.Error, UnicodeDecodeError):
        raise SinkError(f"option file {full} is not a MySQL option file ([group] and key=value lines)",
                        transient=True) from None
    if not parser.has_section(group):
        raise SinkError(f"option file {full} has no [{group}] group", transient=True)
    return {key: parser.get(group, key) or "" for key in ("user", "password", "host", "port", "socket")
            if parser.has_option(group, key)}


def _open(dsn: Dsn, index: int, timeout: float, autocommit: bool) -> Link:
    host, port = dsn.hosts[index]
    where = f"{host}:{port}" if len(dsn.hosts) > 1 else None
    options: dict[str, Any] = {}
    user, password = dsn.user, dsn.password
    settings = option_file(dsn)
    if settings:  # what the URL leaves out
        user = settings.get("user", user) if "user" in dsn.unset else user
        password = password or settings.get("password", "")
        if "host" in dsn.unset:
            host = settings.get("host", host)
            if not settings.get("port", "3306").isdigit():
                raise SinkError(f"option file {dsn.options['read_default_file']}: port is not a number",
                                transient=True)
            port = int(settings.get("port", port))
            if settings.get("socket") and host in ("localhost", ""):
                options["unix_socket"] = settings["socket"]
    if dsn.options.get("unix_socket"):
        options["unix_socket"] = dsn.options["unix_socket"]
    tls = tls_context(dsn)
    if tls is not None:
        options["ssl"] = tls  # required: pymysql refuses a server without TLS (error 2026)
    elif dsn.flag("ssl") is False:
        options["ssl_disabled"] = True
    try:
        conn = pymysql.connect(host=host, port=port, user=user or "root", password=password.encode("utf-8"),
                               database=dsn.database, charset="utf8mb4", autocommit=autocommit,
                               connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout,
                               init_command=SESSION, **options)
    except pymysql.MySQLError as exc:
        raise classify(exc, dsn, where) from None
    try:
        with conn.cursor() as cur:
            cur.execute(f"SHOW VARIABLES WHERE Variable_name IN ({', '.join(['%s'] * len(SETTINGS))})", SETTINGS)
            settings = {str(k): str(v) for k, v in cur.fetchall()}
            if settings.get("wsrep_on") == "ON":
                cur.execute("SHOW STATUS WHERE Variable_name IN (%s, %s)", WSREP_STATUS)
                settings.update((str(k), str(v)) for k, v in cur.fetchall())
    except pymysql.MySQLError as exc:
        conn.close()
        raise classify(exc, dsn, where) from None
    return Link(conn, index, settings)


def tls_context(dsn: Dsn) -> ssl.SSLContext | None:
    """The TLS the DSN asks for, or None (then pymysql uses TLS only if the server offers it).

    With ``ssl_ca`` the server's certificate is checked unless ``ssl_verify_cert=false``: a CA that is
    given and then not used to verify would be a trap.
    """
    options = dsn.options
    ca, cert, key = options.get("ssl_ca"), options.get("ssl_cert"), options.get("ssl_key")
    verify, identity = dsn.flag("ssl_verify_cert"), bool(dsn.flag("ssl_verify_identity"))
    if not (dsn.flag("ssl") or ca or cert or key or verify or identity):
        return None
    verify = (ca is not None) if verify is None else verify
    try:
        context = ssl.create_default_context(cafile=ca)
        context.check_hostname = identity
        context.verify_mode = ssl.CERT_REQUIRED if verify or identity else ssl.CERT_NONE
        if cert or key:
            if not (cert and key):
                raise SinkError("dsn options ssl_cert and ssl_key go together", transient=True)
            context.load_cert_chain(cert, key, password=lambda: b"")  # an encrypted key fails, never prompts
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(f"{k}={v}" for k, v in options.items() if k in ("ssl_ca", "ssl_cert", "ssl_key"))
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SinkError(f"TLS files unusable ({files}): {reason}", transient=True) from None
    return context


def classify(exc: BaseException, dsn: Dsn | None = None, where: str | None = None) -> SinkError:
    """Turn a driver error into a SinkError by errno; the message never carries the password."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    text = str(exc.args[1]) if len(exc.args) > 1 else type(exc).__name__
    for secret in _secrets(dsn):
        text = text.replace(secret, "***")
    return SinkError(f"mysql error {code}: {text}{_at(dsn, where)}", transient=code not in ROW_ERRNOS, code=code)


def _at(dsn: Dsn | None, where: str | None) -> str:
    if dsn is None:
        return ""
    return f" ({dsn.redacted()}" + (f", host {where})" if where else ")")


def _secrets(dsn: Dsn | None) -> list[str]:
    """The passwords a driver's message might hold: the URL's and the option file's."""
    if dsn is None:
        return []
    found = [dsn.password]
    if dsn.options.get("read_default_file"):
        try:
            found.append(option_file(dsn).get("password", ""))
        except SinkError:
            pass
    return [s for s in found if s]
