"""A real, throwaway PostgreSQL server for tests, and the `db_url` fixture over both engines.

PostgreSQL refuses to run as root, so under root initdb and postgres run as the
`postgres` system user, in a temp dir that user owns. A server made with `tls=` serves
TLS only (`hostssl` rules), with a certificate from tests.plugins.tls.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_for
from tests.plugins.tls import TLSFiles

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
RUN_AS = "postgres"
_TOOLS = ("initdb", "postgres", "pg_isready", "psql")


def find_bin_dir() -> Path | None:
    """The directory holding initdb, postgres, pg_isready and psql: $QWATCH_PG_BIN, PATH
    (following symlinks to the real directory), or Debian's /usr/lib/postgresql/N/bin."""
    candidates = [Path(p) for p in [os.environ.get("QWATCH_PG_BIN", "")] if p]
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in _TOOLS):
            return candidate
    return None


def _version(path: Path) -> int:
    name = path.parent.name
    return int(name) if name.isdigit() else 0


class PostgresServer:
    """One postgres process on 127.0.0.1:`port`, trust auth, data in a temp dir.

    stop() and start() again keep the port and the data, so a test can take the database
    away and bring it back. With `tls`, only TLS connections are accepted.
    """

    def __init__(self, bin_dir: Path, port: int | None = None, tls: TLSFiles | None = None) -> None:
        self.bin_dir = bin_dir
        self.tls = tls
        self.port = port or free_port()
        # Not under pytest's tmp_path: that lives in a root-only 0700 directory.
        self.base = Path(tempfile.mkdtemp(prefix="qwatch-pg-"))
        self.data_dir = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self._as_root = os.getuid() == 0
        self._proc: subprocess.Popen[bytes] | None = None
        if self._as_root:
            shutil.chown(self.base, RUN_AS, RUN_AS)
        self._run(
            [
                *(str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres"),
                *("-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"),
            ],
            timeout=120,
        )
        if tls is not None:
            self._serve_tls_only(tls)

    def _serve_tls_only(self, tls: TLSFiles) -> None:
        # The server reads its key only when the postgres user owns it, mode 0600.
        for source, name in ((tls.cert, "server.crt"), (tls.key, "server.key")):
            target = self.data_dir / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            if self._as_root:
                shutil.chown(target, RUN_AS, RUN_AS)
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
        )

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        command = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.base),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ]
        if self.tls is not None:
            command += ["-c", "ssl=on"]  # server.crt and server.key in the data directory
        with self.log_path.open("ab") as log:
            # Its own session: Ctrl-C on pytest must not reach the server before teardown.
            self._proc = subprocess.Popen(
                self._as_user(command), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        isready = [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]

        def ready() -> bool:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited on start:\n{self.log_tail()}")
            return subprocess.run(isready, check=False, timeout=10).returncode == 0

        wait_for(ready, START_TIMEOUT_S, "postgres to accept connections", 0.05, self.log_tail)

    def stop(self) -> None:
        """Fast shutdown by pid: SIGINT, since SIGTERM ("smart") would wait for the
        connections a test's pool still holds; SIGKILL if it does not go in time."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        pid = self._postmaster_pid() or proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)

    def _postmaster_pid(self) -> int | None:
        # The runuser wrapper's pid is not the server's; postmaster.pid names the server.
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if first.strip().isdigit() else None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def psql(self, sql: str, database: str = "postgres") -> str:
        command = [str(self.bin_dir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
        command += ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database]
        return self._run([*command, "-c", sql], as_user=False)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _as_user(self, command: list[str]) -> list[str]:
        if not self._as_root:
            return command
        if shutil.which("runuser"):
            return ["runuser", "-u", RUN_AS, "--", *command]
        return ["su", RUN_AS, "-s", "/bin/sh", "-c", shlex.join(command)]

    def _run(self, command: list[str], *, as_user: bool = True, timeout: float = 60) -> str:
        full = self._as_user(command) if as_user else command
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout


def _new_server(tls: TLSFiles | None = None) -> PostgresServer:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries not found (set QWATCH_PG_BIN)")
    server = PostgresServer(bin_dir, tls=tls)
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the whole run: initdb takes seconds."""
    server = _new_server()
    yield server
    server.cleanup()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the shared server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    yield url
    if postgres_server.running:
        postgres_server.drop_database(name)


@pytest.fixture
def postgres_server_factory() -> Iterator[Callable[..., PostgresServer]]:
    """Servers of the test's own, to stop and start (outage tests) or serving TLS only
    (`make(tls=tls_files)`); all removed after."""
    servers: list[PostgresServer] = []

    def make(tls: TLSFiles | None = None) -> PostgresServer:
        server = _new_server(tls)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL, once per engine: tests using it run on both."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'history.sqlite3'}"
    return str(request.getfixturevalue("pg_url"))
