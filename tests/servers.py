"""Private MariaDB servers for tests that need one unlike the shared server: TLS, a time zone other than
UTC, a lenient sql_mode, a 3-node Galera cluster whose nodes a test may kill.

Each server is a ``mariadbd`` from Debian's packages on 127.0.0.1, on a free port of its own, with its
own data folder under a temporary folder, and is stopped by its PID. ``python tests/servers.py`` starts
a cluster and keeps it until Ctrl-C, for trying things by hand.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pymysql

MARIADBD = "/usr/sbin/mariadbd"
GALERA = "/usr/lib/galera/libgalera_smm.so"
# small logs and caches: a test server holds a few thousand rows, and every node writes its files at start
SMALL = ["--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M", "--performance-schema=OFF",
         "--skip-log-bin", "--max-connections=200"]
# As root the servers run as the packages' `mysql` user, as Debian runs them: the rsync daemon of a
# state transfer, started as root, would switch to `nobody`, who cannot read the data folder.
USER = "mysql" if os.geteuid() == 0 else None
_RUNNING: list[Server] = []
_FOLDERS: list[Path] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scratch(prefix: str) -> Path:
    """A folder the servers' user can reach (pytest's own are private to the test user), removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    _FOLDERS.append(folder)
    return folder


def _own(path: Path) -> None:
    if USER is not None:
        for item in [path, *path.rglob("*")]:
            shutil.chown(item, USER, USER)


_TEMPLATE: list[Path] = []


def template() -> Path:
    """A data folder with the system tables and root@localhost without a password, made once per run and
    copied for each server."""
    if not _TEMPLATE:
        datadir = scratch("cofi-mariadb-template-") / "data"
        user = [f"--user={USER}"] if USER else []
        subprocess.run(["mariadb-install-db", "--no-defaults", "--auth-root-authentication-method=normal",
                        f"--datadir={datadir}", *user, "--skip-test-db", *SMALL[:2]],
                       check=True, capture_output=True, timeout=120)
        _TEMPLATE.append(datadir)
    return _TEMPLATE[0]


class Server:
    """One mariadbd; ``args`` are added to its command line."""

    def __init__(self, folder: Path, name: str, args: Sequence[str] = ()) -> None:
        self.name = name
        self.folder = folder / name
        self.datadir = self.folder / "data"
        self.port = free_port()
        self.socket = str(self.folder / "mysqld.sock")
        self.log = self.folder / "error.log"
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None
        self.folder.mkdir(parents=True)
        shutil.copytree(template(), self.datadir)
        _own(self.folder)

    def command(self, extra: Sequence[str] = ()) -> list[str]:
        user = [f"--user={USER}"] if USER else []
        return [MARIADBD, "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
                "--bind-address=127.0.0.1", f"--socket={self.socket}", f"--pid-file={self.folder / 'mysqld.pid'}",
                f"--log-error={self.log}", *user, *SMALL, *self.args, *extra]

    def start(self, extra: Sequence[str] = (), *, timeout: float = 120.0) -> None:
        self.process = subprocess.Popen(self.command(extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _RUNNING.append(self)
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start; the end of {self.log}:\n{self.tail()}")
            time.sleep(0.1)

    def ready(self) -> bool:
        try:
            pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=1).close()
        except pymysql.MySQLError:
            return False
        return True

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the server tells nobody."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def connect(self, **options: Any) -> Any:
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", **{"autocommit": True, **options})

    def sql(self, *statements: str) -> list[tuple[Any, ...]]:
        """Run statements as root; the rows of the last one."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    def status(self, name: str) -> str:
        rows = self.sql(f"SHOW STATUS LIKE '{name}'")
        return str(rows[0][1]) if rows else ""

    def dsn(self, database: str = "test", user: str = "root") -> str:
        return f"mysql://{user}@{self.address}/{database}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def make_tls(folder: Path) -> dict[str, Path]:
    """A CA of our own and, signed by it, a certificate for 127.0.0.1 (server) and one for a client."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=cofi-test-ca")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who in ("server", "client"):
        openssl("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN=cofi-test-{who}")
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{who}.pem", "-days", "2", "-extfile", "san.ext")
    _own(folder)
    return {name: folder / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


class Galera:
    """Nodes on 127.0.0.1: the first bootstraps the cluster, the others join one at a time by rsync."""

    def __init__(self, folder: Path, size: int = 3) -> None:
        gcomm = [free_port() for _ in range(size)]
        cluster = ",".join(f"127.0.0.1:{p}" for p in gcomm)
        # a killed node is noticed in about 2 s (5 s and 15 s by default); a small gcache file
        provider = ("evs.suspect_timeout=PT2S;evs.inactive_timeout=PT3S;evs.keepalive_period=PT0.5S;"
                    "evs.inactive_check_period=PT0.5S;evs.install_timeout=PT3S;gcache.size=16M")
        self.nodes = [Server(folder, f"node{i + 1}", [
            "--wsrep-on=ON", f"--wsrep-provider={GALERA}", "--wsrep-cluster-name=cofi_test",
            f"--wsrep-cluster-address=gcomm://{cluster}", f"--wsrep-node-address=127.0.0.1:{port}",
            f"--wsrep-node-name=node{i + 1}",
            f"--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{port};"
            f"ist.recv_addr=127.0.0.1:{free_port()};{provider}",
            f"--wsrep-sst-receive-address=127.0.0.1:{free_port()}", "--wsrep-sst-method=rsync",
            "--binlog-format=ROW", "--innodb-autoinc-lock-mode=2", "--default-storage-engine=InnoDB",
        ]) for i, port in enumerate(gcomm)]

    def start(self) -> None:
        first, *others = self.nodes
        first.start(["--wsrep-new-cluster"])
        self.wait_synced(first)
        for node in others:
            self.rejoin(node)

    def rejoin(self, node: Server) -> None:
        """Start a node that is down; it joins the running cluster and catches up before this returns."""
        node.start(timeout=180)
        self.wait_synced(node)

    def heal(self) -> None:
        """Every node up and Synced again, after a test killed one."""
        for node in self.nodes:
            if not node.alive():
                self.rejoin(node)

    def wait_synced(self, node: Server, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if node.status("wsrep_local_state_comment") == "Synced":
                    return
            except pymysql.MySQLError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} not Synced after {timeout} s:\n{node.tail()}")
            time.sleep(0.1)

    def dsn(self, *nodes: Server, database: str = "test") -> str:
        """A DSN listing the given nodes (all by default), in that order."""
        return f"mysql://root@{','.join(n.address for n in nodes or self.nodes)}/{database}"

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


_STARTED: dict[str, Any] = {}


def require(*needs: str) -> None:
    """Skip (fail under CI=true), saying which Debian packages to install, when a private server's tools are
    missing."""
    from conftest import skip_or_fail

    packages = {GALERA: "galera-4", MARIADBD: "mariadb-server", "rsync": "rsync", "socat": "socat",
                "openssl": "openssl"}
    missing = [packages.get(n, n) for n in needs if not (os.path.exists(n) if n.startswith("/") else shutil.which(n))]
    if missing:
        skip_or_fail(f"needs {', '.join(missing)}: apt-get install {' '.join(missing)}")


def start_galera_early() -> None:
    """Start a 3-node cluster on a thread, so that it comes up while other tests run."""
    if "thread" in _STARTED:
        return

    def start() -> None:
        try:
            cluster = Galera(scratch("cofi-galera-"))
            _STARTED["cluster"] = cluster
            cluster.start()
            cluster.nodes[0].sql("CREATE DATABASE test")
        except BaseException as exc:  # handed to the test that waits for the cluster
            _STARTED["error"] = exc

    _STARTED["thread"] = threading.Thread(target=start, name="galera-start", daemon=True)
    _STARTED["thread"].start()


def galera_cluster() -> Galera:
    """The cluster start_galera_early began (begun now if it was not), once every node is Synced."""
    start_galera_early()
    _STARTED["thread"].join()
    if "error" in _STARTED:
        raise RuntimeError(f"the Galera cluster did not start: {_STARTED['error']}") from _STARTED["error"]
    cluster: Galera = _STARTED["cluster"]
    return cluster


@atexit.register
def _clean_up() -> None:
    """A test run that ends without its fixtures' teardown still leaves no server or folder behind."""
    for server in _RUNNING:
        server.stop()
    for folder in _FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill PID` stops the nodes too
    started = time.monotonic()
    galera = galera_cluster()
    print(f"{len(galera.nodes)} nodes Synced in {time.monotonic() - started:.1f} s:", galera.dsn(), flush=True)
    if sys.argv[1:] != ["--once"]:
        signal.pause()
