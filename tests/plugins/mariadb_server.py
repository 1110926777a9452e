"""A real, throwaway MariaDB server for tests: mariadbd on a temp datadir, TCP on a free
loopback port, stopped by its pid.

Grant tables are on: the tests connect as `qw` with a password (so "the password is never
printed" means something); root connects through the server's socket only, to set up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_for

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
CLIENT = shutil.which("mariadb") or "/usr/bin/mariadb"
USER = "qw"
PASSWORD = "qw-s3cr3t-pw"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class MariaDBServer:
    host = "127.0.0.1"

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="qwatch-mariadb-"))
        self.data_dir = self.base / "data"
        self.socket = self.base / "sock"
        self.log_path = self.base / "error.log"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        done = subprocess.run(
            [
                *(INSTALL_DB, "--no-defaults", f"--datadir={self.data_dir}"),
                *("--auth-root-authentication-method=socket", "--skip-test-db"),
                *(["--user=root"] if os.geteuid() == 0 else []),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {done.stderr.strip()[-500:]}")

    def start(self) -> None:
        command = [
            *(MARIADBD, "--no-defaults", f"--datadir={self.data_dir}", f"--port={self.port}"),
            *(f"--bind-address={self.host}", f"--socket={self.socket}"),
            *(f"--pid-file={self.base / 'pid'}", f"--log-error={self.log_path}"),
            *("--skip-log-bin", "--innodb-buffer-pool-size=16M", "--skip-name-resolve"),
            *(["--user=root"] if os.geteuid() == 0 else []),
        ]
        # Its own session: Ctrl-C on pytest must not reach the server before teardown.
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def ready() -> bool:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"mariadbd exited on start:\n{self.log_tail()}")
            return self.socket.exists() and self._client("SELECT 1", check=False) is not None

        wait_for(ready, START_TIMEOUT_S, "mariadbd to accept connections", 0.05, self.log_tail)
        self.sql(
            f"CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';"
            f"GRANT ALL ON *.* TO '{USER}'@'%'"
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _client(self, sql: str, *, check: bool = True) -> str | None:
        command = [CLIENT, "--no-defaults", f"--socket={self.socket}", "-uroot", "-N", "-B"]
        done = subprocess.run(
            [*command, "-e", sql], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            if check:
                raise RuntimeError(f"mariadb failed: {done.stderr.strip()}")
            return None
        return done.stdout

    def sql(self, sql: str) -> str:
        """Run `sql` as root over the socket; its output, tab-separated."""
        out = self._client(sql)
        assert out is not None
        return out

    def create_database(self, name: str) -> str:
        self.sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return f"mysql://{USER}:{PASSWORD}@{self.host}:{self.port}/{name}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """One server for the whole run."""
    if not Path(MARIADBD).is_file():
        pytest.skip("mariadbd not found (apt-get install mariadb-server)")
    server = MariaDBServer()
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    yield server
    server.cleanup()


@pytest.fixture
def mysql_url(mariadb_server: MariaDBServer) -> Iterator[str]:
    """A fresh, empty database on the shared server (`mysql://qw:…@127.0.0.1:port/name`),
    dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = mariadb_server.create_database(name)
    yield url
    mariadb_server.sql(f"DROP DATABASE IF EXISTS `{name}`")
