"""Who may read the dashboard. On a loopback address, anyone on this machine, provided the request names
a loopback host (a web page elsewhere that points its own host name at 127.0.0.1, DNS rebinding, is
refused). On any other address only with the token, checked on every request: an
``Authorization: Bearer`` header, or the cookie set after a first visit to ``/?token=…``."""

from __future__ import annotations

import hmac
import ipaddress
import re
from http.cookies import CookieError, SimpleCookie

COOKIE = "cofi_eventlog_token"
TOKEN_ENV = "COFI_EVENTLOG_DASHBOARD_TOKEN"
MIN_TOKEN = 16
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """ValueError unless this bind is allowed: loopback, or another address with a token."""
    if token is not None and (len(token) < MIN_TOKEN or not _TOKEN.fullmatch(token)):
        raise ValueError(f"the token must be at least {MIN_TOKEN} characters of A-Z a-z 0-9 . _ ~ + / = -")
    if token is None and not is_loopback(host):
        raise ValueError(f"binding {host} serves the dashboard to other machines: give a token with --token or "
                         f"{TOKEN_ENV} (at least {MIN_TOKEN} characters), or bind 127.0.0.1")


class Gate:
    def __init__(self, token: str | None, port: int) -> None:
        self.token = token
        self.hosts = {f"{name}:{port}" for name in LOOPBACK_NAMES} | set(LOOPBACK_NAMES if port == 80 else ())

    def admits(self, headers: dict[str, str]) -> bool:
        """Whether a request with these headers (names lower-case) may be answered."""
        if self.token is None:
            return headers.get("host", "").lower() in self.hosts
        return self.matches(_bearer(headers.get("authorization", ""))) or self.matches(_cookie(headers))

    def matches(self, given: str | None) -> bool:
        return self.token is not None and given is not None and hmac.compare_digest(
            given.encode("utf-8", "replace"), self.token.encode("utf-8"))

    def cookie(self) -> str:
        assert self.token is not None
        return f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"


def _bearer(value: str) -> str | None:
    scheme, _, given = value.partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def _cookie(headers: dict[str, str]) -> str | None:
    try:
        jar = SimpleCookie(headers.get("cookie", ""))
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return None if morsel is None else morsel.value
