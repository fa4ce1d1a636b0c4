"""Where the commands take their database from: --dsn, else --dsn-file, else $COFI_EVENTLOG_DSN, the variable
the library reads too; so a password need not sit on the command line, where /proc/*/cmdline shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cofi_eventlog import EventLogger
from cofi_eventlog.cli import main
from cofi_eventlog.database import Database

# each command that uses a database, with what it needs besides one; all read the events table "evt"
COMMANDS = {
    "migrate": ["migrate", "--table", "evt", "--source-table", "nothing_here", "--quiet"],
    "verify": ["verify", "--table", "evt", "--batch", "b1"],
    "prune": ["prune", "--table", "evt", "--older-than", "1d", "--quiet"],
}


def logged(path: Path) -> str:
    """An SQLite database holding one event of batch b1 in the table evt."""
    dsn = f"sqlite:///{path}"
    with EventLogger(dsn, table="evt") as log:
        log.file_completed("b1", "lid", "a.wav")
    return dsn


def cli(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it: its own process, its own environment."""
    environment = {k: v for k, v in os.environ.items() if k != "COFI_EVENTLOG_DSN"} | env
    return subprocess.run([sys.executable, "-m", "cofi_eventlog", *argv], capture_output=True, text=True,
                          timeout=120, env=environment)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_source_reaches_the_database(command: str, tmp_path: Path) -> None:
    dsn = logged(tmp_path / "events.db")
    (tmp_path / "dsn").write_text(dsn + "\n# the first line is the DSN\n")
    expected = {"migrate": "nothing_here is not in", "verify": "evt holds 1 event of batch b1",
                "prune": "evt in sqlite:///"}[command]
    for extra, env in ((["--dsn", dsn], {}), (["--dsn-file", str(tmp_path / "dsn")], {}),
                       ([], {"COFI_EVENTLOG_DSN": dsn})):
        done = cli(COMMANDS[command] + extra, env)
        assert done.returncode == 0, (extra, env, done.stderr)
        assert expected in done.stdout, (extra, env, done.stdout)


def test_dsn_wins_over_the_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = logged(tmp_path / "events.db")
    monkeypatch.setenv("COFI_EVENTLOG_DSN", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert main(["verify", "--table", "evt", "--batch", "b1", "--dsn", dsn]) == 0
    (tmp_path / "dsn").write_text(dsn)
    assert main(["verify", "--table", "evt", "--batch", "b1", "--dsn-file", str(tmp_path / "dsn")]) == 0
    capsys.readouterr()
    assert main(["verify", "--table", "evt", "--batch", "b1"]) == 2  # the variable's database does not exist
    assert "no database at" in capsys.readouterr().err and not (tmp_path / "elsewhere.db").exists()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_without_a_database_each_says_the_three_ways(command: str, tmp_path: Path) -> None:
    done = cli(COMMANDS[command], {})
    assert done.returncode == 2
    assert "no database given: use --dsn, --dsn-file or $COFI_EVENTLOG_DSN" in done.stderr
    for problem, content in (("is empty", "\n"), ("No such file", None)):
        path = tmp_path / f"dsn-{problem[:2]}"
        if content is not None:
            path.write_text(content)
        done = cli([*COMMANDS[command], "--dsn-file", str(path)], {})
        assert done.returncode == 2 and problem in done.stderr and "Traceback" not in done.stderr, done.stderr
    done = cli([*COMMANDS[command], "--dsn", "sqlite:///x.db", "--dsn-file", str(path)], {})
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


def test_a_password_from_the_variable_stays_off_the_command_line(mysql_dsn: str, tmp_path: Path) -> None:
    """A wrong password given through the variable: refused by the server, and never printed."""
    secret = "s3cret-Pa55"
    wrong = mysql_dsn.replace("://root@", f"://root:{secret}@")
    done = cli(COMMANDS["verify"], {"COFI_EVENTLOG_DSN": wrong})
    assert done.returncode == 2
    assert "mysql error 1045" in done.stderr and secret not in done.stderr + done.stdout
    (tmp_path / "dsn").write_text(wrong)
    done = cli([*COMMANDS["prune"], "--dsn-file", str(tmp_path / "dsn")], {})
    assert done.returncode == 2 and "1045" in done.stderr and secret not in done.stderr + done.stdout


def test_simulate_takes_the_variable_too(mysql_database: str, tmp_path: Path) -> None:
    done = cli(["simulate", "--files", "20", "--json"], {"COFI_EVENTLOG_DSN": mysql_database})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "server_wide" in result["buffered"]  # counted by MariaDB, not by a temporary SQLite file
    with Database(mysql_database) as db:
        assert db.fetchall("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()") == []
