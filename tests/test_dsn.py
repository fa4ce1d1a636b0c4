"""DSN parsing: several hosts, connect options honoured or refused, and a password that never shows."""

from __future__ import annotations

import pytest

from cofi_eventlog.sinks import SinkError, parse_dsn
from cofi_eventlog.sinks.mysql_connect import tls_context

# passwords with every character that means something in a URL, and ones that NFKC normalization turns
# into such a character (urllib refuses those and quotes the password in its error)
PASSWORDS = ["p＃ss＠w０rd", "a/b:c#d", "pa@ss", "ＡＢＣ／：", "%zz", "x y"]


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_password_is_taken_whole_and_never_shown(password: str) -> None:
    dsn = parse_dsn(f"mysql://user:{password}@db1:3306,db2:3307/logs")
    assert dsn.password == password
    assert [dsn.user, dsn.database] == ["user", "logs"]
    assert dsn.hosts == (("db1", 3306), ("db2", 3307))
    for shown in (repr(dsn), str(dsn), dsn.redacted(), dsn.identity()):
        assert password not in shown


@pytest.mark.parametrize("url", [
    "mysql://u:p＃ss@h:3306:9/db", "mysql://u:p＃ss@h:port/db", "mysql://u:p＃ss@h1,,h2/db",
    "mysql://u:p＃ss@h/db?ssl_ca", "mysql://u:p＃ss@h/db?sslca=x", "mysql://u:p＃ss@h/",
    "mysql://u:p?＃ss@h/db", "mysql://u:p＃ss@h/db?ssl_verify_cert=maybe",
])
def test_errors_never_quote_the_password(url: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_dsn(url)
    assert "＃ss" not in str(info.value) and "p?" not in str(info.value)


def test_several_hosts_keep_their_order_and_the_first_is_the_host() -> None:
    dsn = parse_dsn("mysql://u:secret@h1:3306,h2,[::1]:3308/db")
    assert dsn.hosts == (("h1", 3306), ("h2", 3306), ("::1", 3308))
    assert (dsn.host, dsn.port) == ("h1", 3306)
    assert dsn.identity() == "mysql://h1:3306,h2:3306,[::1]:3308/db"
    assert dsn.redacted() == "mysql://u:***@h1:3306,h2:3306,[::1]:3308/db"
    assert parse_dsn("mysql://h9/db").hosts == (("h9", 3306),)


def test_connect_options_are_checked() -> None:
    dsn = parse_dsn("mysql://u@h/db?ssl_ca=/etc/ca.pem&ssl_verify_identity=YES&charset=utf8mb4")
    assert dsn.options == {"ssl_ca": "/etc/ca.pem", "ssl_verify_identity": "true", "charset": "utf8mb4"}
    assert dsn.flag("ssl_verify_identity") is True and dsn.flag("ssl_verify_cert") is None
    assert "ssl_ca=/etc/ca.pem" in dsn.redacted()
    socket = parse_dsn("mysql://u@localhost/db?unix_socket=/run/mysqld/mysqld.sock")
    assert socket.options["unix_socket"] == "/run/mysqld/mysqld.sock"
    assert socket.identity() == "mysql://localhost:3306/db?unix_socket=/run/mysqld/mysqld.sock"
    for bad, words in [("?compress=true", "not supported"), ("?charset=latin1", "utf8mb4"),
                       ("?ssl=false&ssl_ca=/x", "contradict"), ("?ssl=1&ssl=0", "twice"),
                       ("?unix_socket=/s", "several hosts")]:
        host = "h1,h2" if "unix_socket" in bad else "h"
        with pytest.raises(ValueError, match=words):
            parse_dsn(f"mysql://u@{host}/db{bad}")


def test_tls_files_that_cannot_be_used_are_a_clear_error() -> None:
    with pytest.raises(SinkError) as info:
        tls_context(parse_dsn("mysql://u:pw@h/db?ssl_ca=/nonexistent/ca.pem&ssl_verify_cert=true"))
    assert "ssl_ca=/nonexistent/ca.pem" in str(info.value) and "No such file" in str(info.value)
    with pytest.raises(SinkError, match="go together"):
        tls_context(parse_dsn("mysql://u@h/db?ssl_cert=/x.pem"))
    assert tls_context(parse_dsn("mysql://u@h/db")) is None  # the driver's default: TLS if offered
