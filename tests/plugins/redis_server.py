"""Real `redis-server` processes for tests: plain, password, ACL user, unix socket, TLS
(with the certificates of tests.plugins.tls).

Each server runs on a free loopback port with its own data dir, persists nothing, and is
stopped by its pid at teardown. `stop()` then `start()` brings it back on the same port,
for outage tests.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from qwatch.config import RedisSettings
from tests.helpers import free_port, stop_process, wait_for
from tests.plugins.tls import TLSFiles

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
# sockaddr_un holds 108 bytes; pytest's tmp paths can be longer than that.
_MAX_UNIX_PATH = 100


class RedisServer:
    """One `redis-server` process. Options are fixed at construction; start() uses them.

    password: `--requirepass` (the default user's password).
    users: ACL rules, one string per user, e.g. "alice on >secret ~* +@all".
    unix_socket: also listen on a unix socket (`.unix_socket_path`).
    tls: serve TLS only (`--port 0 --tls-port N`); clients are verified when
    tls_auth_clients is True.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        password: str | None = None,
        users: Sequence[str] = (),
        unix_socket: bool = False,
        tls: TLSFiles | None = None,
        tls_auth_clients: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.password = password
        self.users = tuple(users)
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        self.extra_args = tuple(extra_args)
        self.unix_socket_path: str | None = None
        self._socket_dir: Path | None = None
        if unix_socket:
            path = workdir / "redis.sock"
            if len(str(path)) > _MAX_UNIX_PATH:
                self._socket_dir = Path(tempfile.mkdtemp(prefix="qw-redis-"))
                path = self._socket_dir / "redis.sock"
            self.unix_socket_path = str(path)
        self.port = 0  # chosen at the first start, kept for restarts
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        """Start, on the port of the previous run if there was one, and wait for PING."""
        if self.running:
            return self
        if self.port:
            self._launch()
            return self
        # A free port can be taken by someone else before redis binds it: pick another.
        for attempt in range(3):
            self.port = free_port()
            try:
                self._launch()
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGTERM, and wait for the process to exit (SIGKILL if it will not)."""
        if self._process is None:
            return
        stop_process(self._process, STOP_TIMEOUT_S)
        self._process = None

    def kill(self) -> None:
        """SIGKILL: a crash, as clients see it."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def cleanup(self) -> None:
        """Stop, and remove what lives outside the workdir (a short-path socket dir)."""
        self.stop()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _command(self) -> list[str]:
        args = [
            REDIS_SERVER,
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.tls:
            args += [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "yes" if self.tls_auth_clients else "no",
            ]  # fmt: skip
        else:
            args += ["--port", str(self.port)]
        if self.password is not None:
            args += ["--requirepass", self.password]
        for rule in self.users:
            args += ["--user", *rule.split()]
        if self.unix_socket_path:
            args += ["--unixsocket", self.unix_socket_path, "--unixsocketperm", "700"]
        return args + list(self.extra_args)

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def _launch(self) -> None:
        self._process = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        try:
            self._wait_ready(self._process)
        except BaseException:
            self.kill()  # never leave a server behind that no fixture will stop
            raise

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        def answers() -> bool:
            if self._answers_ping():
                return True
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start:\n{self._log_tail()}")
            return False

        wait_for(answers, START_TIMEOUT_S, "redis-server to answer PING", 0.01, self._log_tail)

    def _answers_ping(self) -> bool:
        """True once the server answers PING; NOAUTH counts, it is up and parsing commands."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as raw:
                if not self.tls:
                    return self._ping(raw)
                context = self._probe_tls_context()
                with context.wrap_socket(raw, server_hostname=self.host) as wrapped:
                    return self._ping(wrapped)
        except OSError:  # ssl.SSLError included
            return False

    @staticmethod
    def _ping(conn: socket.socket) -> bool:
        conn.sendall(b"PING\r\n")
        reply = conn.recv(64)
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def _probe_tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.tls.ca) if self.tls else None)
        if self.tls and self.tls_auth_clients:
            context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        return context

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return "(no log)"

    # -- how clients reach it

    @property
    def url(self) -> str:
        """redis:// (or rediss://) URL for the default user and db 0, as Django Q takes it."""
        return self.url_for()

    def url_for(self, db: int = 0, username: str | None = None, password: str | None = None) -> str:
        password = self.password if password is None and username is None else password
        auth = ""
        if username is not None or password is not None:
            auth = f"{quote(username or '', safe='')}:{quote(password or '', safe='')}@"
        if self.tls:
            query = f"?ssl_ca_certs={quote(str(self.tls.ca), safe='/')}"
            return f"rediss://{auth}{self.host}:{self.port}/{db}{query}"
        return f"redis://{auth}{self.host}:{self.port}/{db}"

    @property
    def unix_url(self) -> str:
        if not self.unix_socket_path:
            raise RuntimeError("this server has no unix socket")
        return f"unix://{self.unix_socket_path}?db=0"

    def settings(self, **overrides: object) -> RedisSettings:
        """RedisSettings for this server (default user, db 0, TLS verified by the test CA)."""
        fields: dict[str, object] = {"host": self.host, "port": self.port}
        if self.password is not None:
            fields["password"] = self.password
        if self.tls:
            fields.update(ssl=True, ssl_ca_certs=str(self.tls.ca))
            if self.tls_auth_clients:
                fields.update(
                    ssl_certfile=str(self.tls.client_cert), ssl_keyfile=str(self.tls.client_key)
                )
        fields.update(overrides)
        return RedisSettings(**fields)  # type: ignore[arg-type]


def redis_client(
    server: RedisServer,
    db: int = 0,
    username: str | None = None,
    password: str | None = None,
) -> redis.Redis:
    """A sync redis-py client for seeding and inspecting a test server (bytes in, bytes out)."""
    options: dict[str, object] = {}
    if server.tls:
        options.update(ssl=True, ssl_ca_certs=str(server.tls.ca))
        if server.tls_auth_clients:
            options.update(
                ssl_certfile=str(server.tls.client_cert), ssl_keyfile=str(server.tls.client_key)
            )
    return redis.Redis(
        host=server.host,
        port=server.port,
        db=db,
        username=username,
        password=server.password if password is None and username is None else password,
        socket_timeout=10,
        **options,  # type: ignore[arg-type]
    )


RedisServerFactory = Callable[..., RedisServer]


@pytest.fixture
def redis_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisServerFactory]:
    """make(**options) -> a started RedisServer (options as RedisServer's); all stopped after."""
    servers: list[RedisServer] = []

    def make(**options: object) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis"), **options)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.cleanup()


@pytest.fixture
def redis_server(redis_server_factory: RedisServerFactory) -> RedisServer:
    """A fresh plain redis-server on loopback, no password, stopped after the test."""
    return redis_server_factory()


@pytest.fixture
def tls_redis_server(redis_server_factory: RedisServerFactory, tls_files: TLSFiles) -> RedisServer:
    """A TLS-only redis-server (certificate for localhost and 127.0.0.1, signed by tls_files.ca)."""
    return redis_server_factory(tls=tls_files)
