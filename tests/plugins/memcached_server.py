"""Real `memcached` processes for tests, each on a free loopback port, stopped by its pid.

`memcached_server_factory(*extra_args)` starts one more (e.g. `"-I", "8m"` for a larger
item size); every server started is stopped at teardown. `raw_command` talks the text
protocol directly, for planting values Django would never write.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from urllib.parse import unquote

import pytest

from tests.helpers import free_port, stop_process, wait_for

MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
# memcached refuses to run as root unless told which user to be (CI containers run as root).
_AS_USER = ("-u", "root") if os.geteuid() == 0 else ()


class MemcachedServer:
    host = "127.0.0.1"

    def __init__(self, *extra_args: str, unix_socket: str | None = None) -> None:
        self.extra_args = extra_args
        self.unix_socket = unix_socket  # listen there only (memcached's -s: no TCP then)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """As Django's LOCATION and qwatch's CacheSettings.location take it."""
        if self.unix_socket:
            return f"unix:{self.unix_socket}"
        return f"{self.host}:{self.port}"

    def start(self) -> MemcachedServer:
        # A free port can be taken by someone else before memcached binds it: pick another.
        for attempt in range(3):
            self.port = free_port()
            if self._launch():
                return self
            if attempt == 2:
                raise RuntimeError(f"memcached would not start on port {self.port}")
        raise AssertionError("unreachable")

    def restart(self) -> None:
        """Stop, and start again on the same port (empty): a restart, as clients see it."""
        self.stop()
        if not self._launch():
            raise RuntimeError(f"memcached would not restart on port {self.port}")

    def _launch(self) -> bool:
        """Start on self.port; False (and nothing left running) if it will not come up."""
        command = [MEMCACHED, "-U", "0", *_AS_USER]
        if self.unix_socket:
            command += ["-s", self.unix_socket]
        else:
            command += ["-l", self.host, "-p", str(self.port)]
        self._process = subprocess.Popen(
            [*command, *self.extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(self._answers, START_TIMEOUT_S, "memcached to answer version", 0.01)
            return True
        except (RuntimeError, AssertionError):
            self.stop()
            return False

    def _answers(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError("memcached exited at start")
        try:
            return self.raw_command(b"version\r\n").startswith(b"VERSION ")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM by pid, and wait (SIGKILL if it will not go)."""
        if self._process is None:
            return
        stop_process(self._process, STOP_TIMEOUT_S)
        self._process = None

    def raw_command(self, command: bytes, until: bytes = b"\r\n") -> bytes:
        """Send `command` as is; the reply up to and including `until`."""
        with self._connect() as conn:
            conn.sendall(command)
            reply = b""
            while not reply.endswith(until):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                reply += chunk
            return reply

    def _connect(self) -> socket.socket:
        if not self.unix_socket:
            return socket.create_connection((self.host, self.port), timeout=5.0)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(5.0)
        try:
            conn.connect(self.unix_socket)
        except OSError:
            conn.close()
            raise
        return conn

    def raw_set(self, key: str, value: bytes, flags: int = 0, exptime: int = 0) -> None:
        """`set` with any flags: values no client library would write."""
        head = f"set {key} {flags} {exptime} {len(value)}\r\n".encode()
        reply = self.raw_command(head + value + b"\r\n")
        assert reply == b"STORED\r\n", reply

    def raw_keys(self) -> set[str]:
        """The keys this server holds (`lru_crawler metadump all`)."""
        dump = self.raw_command(b"lru_crawler metadump all\r\n", until=b"END\r\n")
        return {
            unquote(line.split(b" ", 1)[0].removeprefix(b"key=").decode())
            for line in dump.splitlines()
            if line.startswith(b"key=")
        }


MemcachedServerFactory = Callable[..., MemcachedServer]


@pytest.fixture
def memcached_server_factory() -> Iterator[MemcachedServerFactory]:
    servers: list[MemcachedServer] = []

    def make(*extra_args: str, unix_socket: str | None = None) -> MemcachedServer:
        server = MemcachedServer(*extra_args, unix_socket=unix_socket)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def memcached_server(memcached_server_factory: MemcachedServerFactory) -> MemcachedServer:
    """A fresh memcached on loopback (items up to 8 MB, to plant oversize values)."""
    return memcached_server_factory("-I", "8m")
