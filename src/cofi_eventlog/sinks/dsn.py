"""Database URLs: ``mysql://user:pass@host:3306/db`` and ``sqlite:///path``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

SCHEMES = {"mysql": "mysql", "mysql+pymysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}


@dataclass(frozen=True)
class Dsn:
    """A parsed URL. The password is kept out of repr() so it never reaches logs or errors."""

    dialect: str
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = field(default="", repr=False)
    database: str = ""
    path: str = ""
    options: dict[str, str] = field(default_factory=dict)

    def redacted(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:///{self.path}"
        secret = ":***" if self.password else ""
        return f"mysql://{self.user}{secret}@{self.host}:{self.port}/{self.database}"

    def identity(self) -> str:
        """Where rows go, without credentials: the spool of one target is found again whoever logs in."""
        if self.dialect == "sqlite":
            return f"sqlite:///{os.path.abspath(self.path)}"
        return f"mysql://{self.host}:{self.port}/{self.database}"

    def __str__(self) -> str:
        return self.redacted()


def parse_dsn(url: str) -> Dsn:
    """Parse a URL; errors quote the URL without its password."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError("dsn must be a URL such as mysql://user:pass@host:3306/db or sqlite:///path")
    scheme = url.split("://", 1)[0].lower()
    dialect = SCHEMES.get(scheme)
    if dialect is None:
        raise ValueError(f"dsn scheme {scheme!r} is not supported; use mysql:// or sqlite:///")
    if dialect == "sqlite":
        path = url.split("://", 1)[1]
        path = path[1:] if path.startswith("/") else path  # sqlite:///rel, sqlite:////abs
        if not path:
            raise ValueError("sqlite dsn needs a path: sqlite:///events.db")
        return Dsn("sqlite", path=unquote(path))
    parts = urlsplit(url)
    try:
        port = parts.port or 3306
    except ValueError:
        raise ValueError("dsn port is not a number") from None
    database = parts.path.lstrip("/")
    if not database:
        raise ValueError(f"mysql dsn needs a database: {Dsn('mysql', host=parts.hostname or '').redacted()}")
    return Dsn(
        "mysql",
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=unquote(database),
        options=dict(parse_qsl(parts.query)),
    )
