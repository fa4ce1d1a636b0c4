"""What the dashboard's browser tests share: Debian's Chromium through playwright, and a real
``cofi-eventlog dashboard`` process on a free port.

Without /usr/bin/chromium the browser tests skip, saying how to install it; with CI=true they fail
instead, as the MySQL tests do under COFI_EVENTLOG_REQUIRE_MYSQL=1."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import skip_or_fail
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = os.environ.get("COFI_EVENTLOG_TEST_CHROMIUM", "/usr/bin/chromium")  # another path: to try its absence


def chromium_problem() -> str | None:
    if os.access(CHROMIUM, os.X_OK):
        return None
    return f"{CHROMIUM} is missing: install Debian's chromium (sudo apt-get install chromium; .ci/run does)"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    problem = chromium_problem()
    if problem is not None:
        skip_or_fail(problem)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                     "--disable-dev-shm-usage"])
        yield launched
        launched.close()


class Server:
    """A ``cofi-eventlog dashboard`` process on a free port."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, max_files: int | None = None) -> None:
        def limit() -> None:
            if max_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        self.process = subprocess.Popen([sys.executable, "-m", "cofi_eventlog", "dashboard", "--port", "0", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, **(env or {})}, preexec_fn=limit)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"at (http://\S+/) ", line)
        if found is None:
            self.stop()
            raise AssertionError(f"dashboard did not start: {line!r}")
        self.url = found.group(1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, max_files: int | None = None) -> Server:
        started.append(Server(*args, env=env, max_files=max_files))
        return started[-1]

    yield start
    for server in started:
        server.stop()
