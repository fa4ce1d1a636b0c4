"""Connections as production has them, against real servers: a private MariaDB whose own time zone is
+05:30 and sql_mode is lenient, with TLS from a CA the test makes and a unix socket; a password that
URL parsers mangle; several hosts, one of which goes away and comes back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import rows_of
from faultproxy import FaultProxy
from servers import Server, make_tls, require, scratch
from test_sinks import _row

from cofi_eventlog import EventLogger
from cofi_eventlog.database import Database
from cofi_eventlog.sinks import MySQLSink, SinkError, parse_dsn
from cofi_eventlog.sinks.mysql_connect import connect

PASSWORD = "p＃ss＠w０rd:/x"  # fullwidth # and @: NFKC makes them URL delimiters


@dataclass
class Lenient:
    """The private server, the TLS files it was started with, and a CA that did not sign its certificate."""

    server: Server
    tls: dict[str, Path]
    other_ca: Path


@pytest.fixture(scope="module")
def lenient() -> Iterator[Lenient]:
    require("openssl")
    folder = scratch("cofi-tls-")
    tls = make_tls(folder / "tls")
    server = Server(folder, "lenient", ["--default-time-zone=+05:30", "--sql-mode=",
                                        f"--ssl-ca={tls['ca.pem']}", f"--ssl-cert={tls['server.pem']}",
                                        f"--ssl-key={tls['server.key']}"])
    server.start()
    server.sql("CREATE DATABASE test",
               f"CREATE USER 'pw'@'%' IDENTIFIED BY '{PASSWORD}'", "GRANT ALL ON test.* TO 'pw'@'%'",
               "CREATE USER 'cert'@'%' REQUIRE X509", "GRANT ALL ON test.* TO 'cert'@'%'")
    yield Lenient(server, tls, make_tls(folder / "other-ca")["ca.pem"])
    server.stop()


@pytest.fixture
def server(lenient: Lenient) -> Server:
    return lenient.server


def cipher(dsn: str) -> str:
    with Database(dsn) as db:
        return str(db.fetchall("SHOW SESSION STATUS LIKE 'Ssl_cipher'")[0][1])


def test_sessions_are_utc_and_strict_whatever_the_server_says(server: Server, tmp_path: Path) -> None:
    table = "older_tz"
    server.sql(f"CREATE TABLE test.{table} (eventId BINARY(16) NOT NULL PRIMARY KEY, batchId VARCHAR(128) NOT NULL, "
               "stage VARCHAR(64), eventType VARCHAR(32) NOT NULL, fileName VARCHAR(255), message TEXT, "
               "gpuIp VARCHAR(64), processed INT, total BIGINT, metadata JSON, createdAt TIMESTAMP(6) NOT NULL)")
    assert server.sql("SELECT @@global.time_zone, @@global.sql_mode") == [("+05:30", "")]
    sessions: list[tuple[str, str]] = []

    def seen(conn: object) -> None:
        with conn.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute("SELECT @@session.time_zone, @@session.sql_mode")
            sessions.append(cur.fetchone())

    called = datetime.now(timezone.utc)
    with EventLogger(server.dsn(), table=table, spool_dir=str(tmp_path), on_connect=seen) as log:
        log.file_error("tz", "lid", "/in/" + "f" * 300, "boom", "10.0.0.1")
        log.progress("tz", "lid", 3_000_000_000, 3_000_000_000)
        assert log.flush(10)
        stats = log.stats()
    assert sessions[0][0] == "+00:00" and "STRICT_ALL_TABLES" in sessions[0][1]
    # a lenient server would have cut and clamped these in silence; the library did, and said so
    assert stats["coerced"] == 2 and stats["dead_lettered"] == 0
    rows = {r["eventType"]: r for r in rows_of(server.dsn(), table)}
    assert len(str(rows["error"]["fileName"])) == 255 and rows["progress"]["processed"] == 2**31 - 1
    assert "fileName: 304 chars, cut to fit varchar(255)" in json.loads(str(rows["error"]["metadata"]))["coerced"]
    # the TIMESTAMP holds the call's instant: read back in UTC, and as epoch seconds in any zone
    stored = rows["error"]["createdAt"]
    assert isinstance(stored, datetime) and abs(stored.replace(tzinfo=timezone.utc) - called) < timedelta(seconds=5)
    epoch = server.sql(f"SELECT UNIX_TIMESTAMP(createdAt) FROM test.{table} WHERE eventType = 'error'")[0][0]
    assert abs(float(epoch) - called.timestamp()) < 5
    # what an unpinned session (the server's +05:30) does with the same text: 5.5 hours early
    naive = stored.strftime("%Y-%m-%d %H:%M:%S.%f")
    local = server.sql(f"SELECT UNIX_TIMESTAMP('{naive}')")[0][0]
    assert abs(float(epoch) - float(local) - 5.5 * 3600) < 1


def test_tls_is_used_when_asked_for(lenient: Lenient, server: Server, tmp_path: Path) -> None:
    tls = lenient.tls
    verified = f"{server.dsn()}?ssl_ca={tls['ca.pem']}"
    assert cipher(verified)  # a real TLS session, the server's certificate checked against our CA
    assert cipher(f"{verified}&ssl_verify_identity=true")  # and its name: IP 127.0.0.1
    assert cipher(f"{server.dsn()}?ssl=true")  # encrypted without checking the certificate
    assert cipher(f"{server.dsn()}?ssl=false") == ""
    client = f"mysql://cert@{server.address}/test?ssl_ca={tls['ca.pem']}&ssl_cert={tls['client.pem']}" \
             f"&ssl_key={tls['client.key']}"
    assert cipher(client)  # a user who must show a certificate gets in with ours
    with pytest.raises(SinkError, match="1045"):
        Database(f"mysql://cert@{server.address}/test?ssl_ca={tls['ca.pem']}")
    with EventLogger(verified, table="over_tls", spool_dir=str(tmp_path)) as log:
        log.file_error("tls", "lid", "a.wav", "e", "10.0.0.1")
        assert log.flush(10)
    assert len(rows_of(verified, "over_tls")) == 1


def test_tls_that_cannot_be_had_is_refused_never_plain(lenient: Lenient, server: Server, mysql_dsn: str) -> None:
    with pytest.raises(SinkError, match="No such file"):
        Database(f"{server.dsn()}?ssl_ca=/nonexistent/ca.pem&ssl_verify_cert=true")
    with pytest.raises(SinkError, match="certificate verify failed"):
        Database(f"{server.dsn()}?ssl_ca={lenient.other_ca}")
    with pytest.raises(SinkError, match="2026"):  # the shared server has no TLS
        Database(f"{mysql_dsn}?ssl=true")


def test_a_unix_socket_dsn_uses_the_socket(server: Server, tmp_path: Path) -> None:
    dsn = f"mysql://root@localhost/test?unix_socket={server.socket}"
    conn = connect(parse_dsn(dsn))
    assert conn.host_info == "Localhost via UNIX socket"
    conn.close()
    with EventLogger(dsn, table="over_socket", spool_dir=str(tmp_path)) as log:
        log.file_error("sock", "lid", "a.wav", "e", "10.0.0.1")
        assert log.flush(10)
    assert len(rows_of(server.dsn(), "over_socket")) == 1


@pytest.mark.parametrize("spelled", [PASSWORD, quote(PASSWORD, safe="")])
def test_a_password_urls_mangle_logs_in_and_never_shows(server: Server, tmp_path: Path, spelled: str) -> None:
    dsn = f"mysql://pw:{spelled}@{server.address}/test"
    with EventLogger(dsn, table="pw_events", spool_dir=str(tmp_path)) as log:
        log.file_error("pw", "lid", "a.wav", "e", "10.0.0.1")
        assert log.flush(10)
        assert PASSWORD not in repr(log) and PASSWORD not in repr(log.stats())
    wrong = f"mysql://pw:{spelled}x@{server.address}/test"
    with pytest.raises(SinkError) as info:
        Database(wrong)
    assert "1045" in str(info.value) and PASSWORD not in str(info.value) and "＃" not in str(info.value)
    log = EventLogger(wrong, table="pw_events", spool_dir=str(tmp_path / "wrong"), timeout=3)
    log.file_error("pw", "lid", "b.wav", "e", "10.0.0.1")
    assert log.flush(5) is False
    assert "＃" not in str(log.stats()) and "1045" in str(log.stats()["last_error"])
    log.close(timeout=5)


def test_several_hosts_move_on_and_come_back(mysql_dsn: str, mysql_table: str, fault_proxy: FaultProxy) -> None:
    """Two routes to the shared server: through a proxy that is cut and restored, and direct."""
    direct = parse_dsn(mysql_dsn)
    through_proxy, straight = f"127.0.0.1:{fault_proxy.port}", f"{direct.host}:{direct.port}"
    sink = MySQLSink(parse_dsn(f"mysql://{direct.user}@{through_proxy},{straight}/{direct.database}"), mysql_table,
                     return_after=0.5)
    rows = [_row(i, "hosts") for i in range(30)]
    sink.write(rows[:10])
    assert sink.host == through_proxy
    fault_proxy.cut()
    with pytest.raises(SinkError):  # the connection in use dies with its host ...
        sink.write(rows[10:20])
    sink.write(rows[10:20])  # ... and the next one goes to the next host
    assert sink.host == straight
    fault_proxy.restore()
    sink.write(rows[20:25])
    assert sink.host == straight  # not before return_after
    time.sleep(0.6)
    accepted = fault_proxy.accepted
    sink.write(rows[25:])
    assert sink.host == through_proxy and fault_proxy.accepted == accepted + 1
    sink.close()
    assert len(rows_of(mysql_dsn, mysql_table)) == 30


def settled_error(log: EventLogger, words: str, timeout: float = 15.0) -> str:
    """The logger's last error once it holds ``words`` (the writer may still be trying the hosts)."""
    deadline = time.monotonic() + timeout
    while words not in str(log.stats()["last_error"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return str(log.stats()["last_error"])


def test_no_failover_to_a_server_that_is_not_the_same(mysql_dsn: str, mysql_table: str, server: Server,
                                                      fault_proxy: FaultProxy, tmp_path: Path) -> None:
    """A DSN listing the shared server (through a proxy that is cut) and the private one, an independent
    server: when the first goes away the events wait in the spool, never half the batch on the other."""
    direct = parse_dsn(mysql_dsn)
    dsn = f"mysql://{direct.user}@127.0.0.1:{fault_proxy.port},{server.address}/{direct.database}"
    server.sql(f"DROP TABLE IF EXISTS test.{mysql_table}")
    log = EventLogger(dsn, table=mysql_table, spool_dir=str(tmp_path), timeout=3, batch_size=1000)
    try:
        for i in range(1000):
            log.file_completed("split", "lid", f"a{i}.wav", "10.0.0.1")
        assert log.flush(15)
        fault_proxy.cut()
        for i in range(2000):
            log.file_completed("split", "lid", f"b{i}.wav", "10.0.0.1")
        assert log.flush(3) is False
        error = settled_error(log, "is not in the cluster written to so far")
        assert f"host {server.address} is not in the cluster written to so far" in error
        assert "nothing is written there" in error
        fault_proxy.restore()
        assert log.flush(30)
        stats = log.stats()
    finally:
        log.close()
    assert stats["dropped"] == 0 and stats["dead_lettered"] == 0
    assert len(rows_of(mysql_dsn, mysql_table)) == 3000
    assert server.sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'test' AND "
                      f"table_name = '{mysql_table}'") == [(0,)]  # not even its table was made there


def test_a_read_only_host_is_passed_over(mysql_dsn: str, mysql_table: str, server: Server) -> None:
    """read_only binds no SUPER user (root): the sink checks it itself, and writes to the next host."""
    direct = parse_dsn(mysql_dsn)
    server.sql("SET GLOBAL read_only = ON")
    try:
        sink = MySQLSink(parse_dsn(f"mysql://root@{server.address},{direct.host}:{direct.port}/{direct.database}"),
                         mysql_table)
        sink.write([_row(i, "ro") for i in range(5)])
        assert sink.host == f"{direct.host}:{direct.port}"
        sink.close()
        alone = MySQLSink(parse_dsn(f"mysql://root@{server.address},{server.address}/test"), "ro_events")
        with pytest.raises(SinkError) as info:
            alone.write([_row(9, "ro")])
        assert "is read-only (read_only = ON); nothing is written there" in str(info.value)
        assert info.value.transient
    finally:
        server.sql("SET GLOBAL read_only = OFF")
    assert len(rows_of(mysql_dsn, mysql_table)) == 5
