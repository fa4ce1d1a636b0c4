"""A user name or password never shows in an error, whatever the URL holds; and a password need not be in
the URL at all (a MySQL option file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cofi_eventlog.database import Database
from cofi_eventlog.sinks import SinkError, parse_dsn
from cofi_eventlog.sinks.mysql_connect import classify, connect

# Letters no message of the library uses in upper case, mixed with every character that means something in a
# URL: a four-character piece of the secret holding one of the letters can come only from the secret.
# The user's letters and the password's differ, so that a piece of one is never taken for the other.
USER_MARKS, PASSWORD_MARKS = "QZ", "XJKW"
SIGNS = "@?/:#%[],&=+ ~$!;'\"\\.-_*ＡＢ＃＠０"
user_text = st.text(alphabet=USER_MARKS + SIGNS, min_size=1, max_size=16)
password_text = st.text(alphabet=PASSWORD_MARKS + SIGNS, min_size=1, max_size=16)
hosts = st.sampled_from(["db1", "db1:3306", "db1:3306,db2:3307", "[::1]:3308", "", "h:port", "h1,,h2"])
queries = st.sampled_from(["", "?ssl=true", "?ssl_ca", "?nope=1", "?ssl_verify_cert=maybe", "?charset=latin1"])


def pieces(secret: str) -> list[str]:
    marks = set(USER_MARKS if secret.startswith("QZ") else PASSWORD_MARKS)
    return [secret[i:i + 4] for i in range(max(1, len(secret) - 3)) if set(secret[i:i + 4]) & marks]


def assert_hidden(message: str, *secrets: str) -> None:
    for secret in secrets:
        for piece in pieces(secret):
            assert piece not in message, (piece, message)


@settings(max_examples=3000, deadline=None)
@given(user=user_text, password=password_text, host=hosts, database=st.sampled_from(["logs", ""]), query=queries)
@example(user="cofi", password="p@ss?w0rd-Secret", host="db-host:3306", database="cofi", query="")
def test_no_message_quotes_the_user_or_password(user: str, password: str, host: str, database: str,
                                               query: str) -> None:
    user, password = f"QZ{user}", f"XJ{password}W"
    url = f"mysql://{user}:{password}@{host}/{database}{query}"
    try:
        dsn = parse_dsn(url)
    except ValueError as exc:
        assert_hidden(str(exc), user, password)
        return
    for text in (repr(dsn), str(dsn), dsn.identity()):  # the redacted form names the user, as a server would
        assert_hidden(text, password)
    assert_hidden(dsn.identity(), user)
    server_says = OSError(1045, f"Access denied for user '{dsn.user}'@'10.0.0.1' (using password: {dsn.password})")
    assert_hidden(str(classify(server_says, dsn)), dsn.password)


def test_the_example_of_a_password_holding_a_question_mark() -> None:
    with pytest.raises(ValueError) as info:
        parse_dsn("mysql://cofi:p@ss?w0rd-Secret@db-host:3306/cofi")
    assert "w0rd" not in str(info.value) and "Secret" not in str(info.value) and "%3F" in str(info.value)


def option_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my.cnf"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_an_option_file_gives_user_host_and_port(mysql_dsn: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    shared = parse_dsn(mysql_dsn)
    monkeypatch.setenv("HOME", str(tmp_path))
    option_file(tmp_path, f"[client]\nuser = {shared.user}\nhost = {shared.host}\nport = {shared.port}\n"
                          f"password = \"{shared.password}\"\n")
    dsn = f"mysql:///{shared.database}?read_default_file=~/my.cnf"
    with Database(dsn) as db:
        assert str(db.scalar("SELECT CURRENT_USER()")).startswith(f"{shared.user}@")
        assert db.scalar("SELECT DATABASE()") == shared.database
    assert parse_dsn(dsn).identity() == (f"mysql://127.0.0.1:3306/{shared.database}?read_default_file="
                                         f"{tmp_path}/my.cnf&read_default_group=client")


def test_an_option_file_group_and_a_wrong_password_never_shown(mysql_dsn: str, tmp_path: Path) -> None:
    shared = parse_dsn(mysql_dsn)
    path = option_file(tmp_path, f"[client]\nuser = nobody\n\n[cofi]\nuser = {shared.user}\nhost = {shared.host}\n"
                                 f"port = {shared.port}\n")
    good = f"mysql:///{shared.database}?read_default_file={path}&read_default_group=cofi"
    with Database(good) as db:
        assert db.scalar("SELECT 1") == 1
    path.write_text(f"[cofi]\nuser = {shared.user}\nhost = {shared.host}\nport = {shared.port}\n"
                    "password = QZhunter2-Secret\n")
    with pytest.raises(SinkError) as info:
        connect(parse_dsn(good), timeout=5)
    assert info.value.code == 1045 and "hunter2" not in str(info.value) and "Access denied" in str(info.value)


def test_an_unusable_option_file_is_named_never_quoted(tmp_path: Path) -> None:
    missing = parse_dsn(f"mysql:///test?read_default_file={tmp_path}/none.cnf")
    with pytest.raises(SinkError, match=r"none\.cnf unreadable: No such file"):
        connect(missing, timeout=2)
    path = option_file(tmp_path, "password = QZsecret-without-a-group\n")
    with pytest.raises(SinkError) as info:
        connect(parse_dsn(f"mysql:///test?read_default_file={path}"), timeout=2)
    assert "not a MySQL option file" in str(info.value) and "QZsecret" not in str(info.value)
    path.write_text("[other]\npassword = QZsecret\n")
    with pytest.raises(SinkError, match=r"no \[client\] group"):
        connect(parse_dsn(f"mysql:///test?read_default_file={path}"), timeout=2)
    with pytest.raises(ValueError, match="needs read_default_file"):
        parse_dsn("mysql:///test?read_default_group=cofi")
    assert os.access(path, os.R_OK)
