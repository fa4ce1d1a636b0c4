"""Database URLs: ``mysql://user:pass@host:3306/db`` (several hosts: ``h1:3306,h2:3306``), ``sqlite:///path``.

The URL is split by hand rather than by ``urllib``: ``urlsplit`` refuses a password holding a character
that NFKC normalization turns into a delimiter (``＃``, ``＠``) and quotes the password in its error. No
message from here ever quotes any part of the user name or password, whatever the URL holds; the
redacted form names the user (it is what a server's "access denied" names) and never the password.

A password need not be in the URL at all: ``?read_default_file=~/.my.cnf`` reads the user, password,
host, port and socket the URL does not give from a MySQL option file (its ``[client]`` group, or
``read_default_group``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import unquote

SCHEMES = {"mysql": "mysql", "mysql+pymysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}
BOOLEANS = {"true": "true", "1": "true", "yes": "true", "on": "true",
            "false": "false", "0": "false", "no": "false", "off": "false"}
# Connect options a MySQL DSN may carry in its query, and what each takes. Any other is refused.
OPTIONS = {
    "ssl": "true or false: require TLS (true), or never use it (false)",
    "ssl_ca": "a PEM file of the CA that signed the server's certificate (implies ssl)",
    "ssl_cert": "a PEM file with the client's certificate (implies ssl)",
    "ssl_key": "a PEM file with the client's private key (implies ssl)",
    "ssl_verify_cert": "true or false: check the server's certificate (default: true when ssl_ca is given)",
    "ssl_verify_identity": "true or false: check the certificate names the host (default: false)",
    "unix_socket": "the server's socket file, used instead of TCP",
    "charset": "utf8mb4 only: the library always talks utf8mb4",
    "read_default_file": "a MySQL option file (~/.my.cnf) giving what the URL does not: user, password, host, "
                         "port, socket",
    "read_default_group": "the group of the option file to read (default: client)",
}
FLAGS = ("ssl", "ssl_verify_cert", "ssl_verify_identity")


@dataclass(frozen=True)
class Dsn:
    """A parsed URL. The password is kept out of repr() so it never reaches logs or errors.

    ``host`` and ``port`` are the first of ``hosts``; a DSN may list several hosts of one cluster.
    """

    dialect: str
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = field(default="", repr=False)
    database: str = ""
    path: str = ""
    options: dict[str, str] = field(default_factory=dict)
    hosts: tuple[tuple[str, int], ...] = ()
    unset: frozenset[str] = frozenset()  # "user", "host": left to their defaults, or to an option file

    def __post_init__(self) -> None:
        if not self.hosts:
            object.__setattr__(self, "hosts", ((self.host, self.port),))

    def _target(self) -> str:
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        socket = self.options.get("unix_socket")
        return f"{hosts}/{self.database}" + (f"?unix_socket={socket}" if socket else "")

    def redacted(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:///{self.path}"
        secret = ":***" if self.password else ""
        others = "&".join(f"{k}={v}" for k, v in self.options.items() if k != "unix_socket")
        target = self._target()
        who = f"{self.user}{secret}@" if self.user or secret else ""
        return f"mysql://{who}{target}" + (("&" if "?" in target else "?") + others if others else "")

    def identity(self) -> str:
        """Where rows go, without credentials: every host of the cluster, in the order given."""
        if self.dialect == "sqlite":
            return f"sqlite:///{os.path.abspath(self.path)}"
        option_file = self.options.get("read_default_file")
        if option_file and "host" in self.unset:  # the host is the file's
            group = self.options.get("read_default_group", "client")
            return f"mysql://{self._target()}?read_default_file={os.path.abspath(os.path.expanduser(option_file))}" \
                   f"&read_default_group={group}"
        return f"mysql://{self._target()}"

    def flag(self, name: str) -> bool | None:
        """A true/false option, or None when the DSN does not say."""
        value = self.options.get(name)
        return None if value is None else value == "true"

    def __str__(self) -> str:
        return self.redacted()


def parse_dsn(url: str) -> Dsn:
    """Parse a URL; errors never quote its password."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError("dsn must be a URL such as mysql://user:pass@host:3306/db or sqlite:///path")
    scheme, rest = url.split("://", 1)
    dialect = SCHEMES.get(scheme.lower())
    if dialect is None:
        shown = f" {scheme.lower()!r}" if scheme.isascii() and scheme.replace("+", "").isalpha() and \
            len(scheme) <= 20 else ""  # anything else may be a user and password with the scheme left out
        raise ValueError(f"dsn scheme{shown} is not supported; use mysql:// or sqlite:///")
    if dialect == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest  # sqlite:///rel, sqlite:////abs
        if not path:
            raise ValueError("sqlite dsn needs a path: sqlite:///events.db")
        return Dsn("sqlite", path=unquote(path))
    head, _, query = rest.partition("?")
    if "@" in query:  # a '?' in the user name or password: what follows it is theirs, never to be quoted
        raise ValueError("dsn: an '@' follows the '?': percent-encode any '?' or '@' in the user name or "
                         "password (%3F, %40), and any '@' in an option's value (%40)")
    userinfo, at, target = head.rpartition("@")
    user, _, password = userinfo.partition(":")
    hostlist, _, database = target.partition("/")
    hosts = _hosts(hostlist)
    options = _options(query)
    if not database:
        raise ValueError("mysql dsn needs a database: mysql://user:password@host:3306/<database>")
    if options.get("unix_socket") and len(hosts) > 1:
        raise ValueError("dsn: unix_socket names one server; it cannot go with several hosts")
    if options.get("read_default_group") and not options.get("read_default_file"):
        raise ValueError("dsn option read_default_group needs read_default_file")
    unset = frozenset(name for name, given in (("user", at and user), ("host", hostlist)) if not given)
    default_user = "" if options.get("read_default_file") else "root"
    return Dsn("mysql", host=hosts[0][0], port=hosts[0][1], user=unquote(user) if at and user else default_user,
               password=unquote(password), database=unquote(database), options=options, hosts=hosts, unset=unset)


def _hosts(hostlist: str) -> tuple[tuple[str, int], ...]:
    """``h1:3306,h2,[::1]:3307`` as (host, port) pairs; an empty list is 127.0.0.1:3306."""
    if not hostlist:
        return (("127.0.0.1", 3306),)
    hosts = []
    for number, item in enumerate(hostlist.split(","), 1):
        if item.startswith("["):
            host, _, port = item[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        which = f"host {number}" if "," in hostlist else "host"
        if not host:
            raise ValueError(f"dsn {which} is empty")
        if port and not (port.isdigit() and port.isascii() and 0 < int(port) < 65536):
            raise ValueError(f"dsn port of {which} is not a number from 1 to 65535")
        hosts.append((unquote(host), int(port) if port else 3306))
    return tuple(hosts)


def _options(query: str) -> dict[str, str]:
    """The query's connect options, checked: unknown names and bad values are refused, never ignored."""
    options: dict[str, str] = {}
    for pair in filter(None, query.split("&")):
        name, eq, raw = pair.partition("=")
        name, value = unquote(name), unquote(raw)
        if name not in OPTIONS:
            known = ", ".join(OPTIONS)
            raise ValueError(f"dsn option {name[:40]!r} is not supported (supported: {known})")
        if not eq or not value:
            raise ValueError(f"dsn option {name} needs a value: {OPTIONS[name]}")
        if name in options:
            raise ValueError(f"dsn option {name} is given twice")
        if name in FLAGS:
            if value.lower() not in BOOLEANS:
                raise ValueError(f"dsn option {name} must be true or false")
            value = BOOLEANS[value.lower()]
        if name == "charset" and value.lower() != "utf8mb4":
            raise ValueError("dsn option charset: the library always talks utf8mb4, which stores any text")
        options[name] = value
    if options.get("ssl") == "false" and any(k.startswith("ssl_") for k in options):
        raise ValueError("dsn options ssl=false and ssl_* contradict each other")
    return options
