"""Django's memcached caches (PyMemcacheCache, PyLibMCCache) read from outside the app.

A minimal asyncio client of the memcached text protocol, not aiomcache: aiomcache 0.8
reads whatever length a VALUE line claims (no bound), fails a whole multi-get on one value
with flags it has no handler for, and has no timeouts of its own. Here each server gets one
`get k1 k2 …` per batch on a connection of its own; a value over MAX_VALUE_BYTES is skipped
unread (drained in chunks) and refused, a connection left mid-reply (error, timeout,
cancel) is closed, never reused.

Placement: a key is asked of the server its client would have written it to, with the
client's default hashing: pymemcache's HashClient (what Django configures) is rendezvous
hashing over murmur3 of "<host>:<port>-<key>"; pylibmc is libmemcached's default, modula
over the one-at-a-time hash, in LOCATION's order. Hashing chosen in the cache's OPTIONS
(pylibmc `behaviors`, a pymemcache `hasher`) is not known here and not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from qwatch.config.settings import CacheSettings
from qwatch.decode.record import inflate
from qwatch.errors import ConfigError, DecodeError, SourceUnavailable, one_line
from qwatch.sources.cache_reader import MAX_VALUE_BYTES, Refused

DEFAULT_PORT = 11211
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 5.0
MAX_KEY_BYTES = 250  # memcached's own limit
_MAX_LINE = 64 * 1024  # a reply line: "VALUE <key> <flags> <bytes>" is far shorter
_DRAIN_CHUNK = 64 * 1024

# Flags: pymemcache's serde and pylibmc agree on these bits (pylibmc's ints are LONG).
FLAG_PICKLE = 1 << 0
FLAG_INTEGER = 1 << 1
FLAG_LONG = 1 << 2
FLAG_ZLIB = 1 << 3  # pylibmc's zlib, pymemcache's CompressedSerde
FLAG_TEXT = 1 << 4

CLIENTS = ("pymemcache", "pylibmc")

T = TypeVar("T")


@dataclass(frozen=True)
class Server:
    """One memcached: TCP host and port, or a unix socket path."""

    host: str = ""
    port: int = DEFAULT_PORT
    path: str = ""

    @property
    def address(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def node(self) -> str:
        """The name pymemcache's HashClient hashes this server by."""
        return self.path or f"{self.host}:{self.port}"


def parse_location(location: str) -> tuple[Server, ...]:
    """LOCATION as Django splits it ("[;,]"): host:port, host, [v6]:port, unix:/path, /path."""
    servers = []
    for spec in (part.strip() for part in re.split("[;,]", location)):
        if not spec:
            continue
        if spec.startswith("unix:") or spec.startswith("/"):
            servers.append(Server(path=spec.removeprefix("unix:")))
            continue
        host, port = spec, DEFAULT_PORT
        if spec.startswith("["):
            host, _, rest = spec[1:].partition("]")
            if rest:
                port = _port(rest.removeprefix(":"), spec)
        elif spec.count(":") == 1:
            host, _, text = spec.partition(":")
            port = _port(text, spec)
        if not host:
            raise ConfigError(f"cache LOCATION: no host in {spec!r}")
        servers.append(Server(host=host, port=port))
    if not servers:
        raise ConfigError("cache LOCATION: no memcached server")
    return tuple(servers)


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"cache LOCATION: bad port in {spec!r}")
    return int(text)


# --- placement ------------------------------------------------------------------------------


def murmur3_32(data: str, seed: int = 0) -> int:
    """pymemcache.client.murmur3.murmur3_32: over the str's code points, as it does."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    codes = [ord(c) & 0xFF for c in data]
    length = len(codes)
    h1 = seed
    rounded = length & ~3
    for i in range(0, rounded, 4):
        k1 = codes[i] | codes[i + 1] << 8 | codes[i + 2] << 16 | codes[i + 3] << 24
        k1 = (k1 * c1) & 0xFFFFFFFF
        k1 = ((k1 << 15) | (k1 >> 17)) & 0xFFFFFFFF
        k1 = (k1 * c2) & 0xFFFFFFFF
        h1 ^= k1
        h1 = ((h1 << 13) | (h1 >> 19)) & 0xFFFFFFFF
        h1 = (h1 * 5 + 0xE6546B64) & 0xFFFFFFFF
    tail = length & 3
    if tail:
        k1 = 0
        if tail == 3:
            k1 = codes[rounded + 2] << 16
        if tail >= 2:
            k1 |= codes[rounded + 1] << 8
        k1 |= codes[rounded]
        k1 = (k1 * c1) & 0xFFFFFFFF
        k1 = ((k1 << 15) | (k1 >> 17)) & 0xFFFFFFFF
        k1 = (k1 * c2) & 0xFFFFFFFF
        h1 ^= k1
    h1 ^= length
    h1 ^= h1 >> 16
    h1 = (h1 * 0x85EBCA6B) & 0xFFFFFFFF
    h1 ^= h1 >> 13
    h1 = (h1 * 0xC2B2AE35) & 0xFFFFFFFF
    h1 ^= h1 >> 16
    return h1


def one_at_a_time(data: bytes) -> int:
    """libmemcached's MEMCACHED_HASH_DEFAULT (Jenkins' one-at-a-time)."""
    h = 0
    for byte in data:
        h = (h + byte) & 0xFFFFFFFF
        h = (h + (h << 10)) & 0xFFFFFFFF
        h ^= h >> 6
    h = (h + (h << 3)) & 0xFFFFFFFF
    h ^= h >> 11
    return (h + (h << 15)) & 0xFFFFFFFF


def place(key: str, servers: tuple[Server, ...], client: str) -> int:
    """The index in `servers` of the server `client` stores `key` on."""
    if len(servers) == 1:
        return 0
    if client == "pylibmc":
        return one_at_a_time(key.encode()) % len(servers)
    # pymemcache.client.rendezvous.RendezvousHash.get_node: highest score wins, ties to
    # the greater node name.
    best, best_score = 0, -1
    for index, server in enumerate(servers):
        score = murmur3_32(f"{server.node}-{key}")
        if score > best_score or (score == best_score and server.node > servers[best].node):
            best, best_score = index, score
    return best


# --- values ---------------------------------------------------------------------------------


def unwrap(flags: int, data: bytes) -> bytes | Refused:
    """A stored value as the cache source takes it (qwatch.sources.cache_reader): a pickle's
    bytes as stored (they start with b"\\x80"), or a text value's UTF-8 bytes (which never
    do); anything else is refused."""
    if flags & FLAG_ZLIB:
        try:
            data = inflate(data, MAX_VALUE_BYTES)
        except DecodeError as error:
            return Refused(error.reason)
        flags &= ~FLAG_ZLIB
    if flags == FLAG_PICKLE:
        if data[:1] != b"\x80":  # protocols 0-1: no writer of Django's uses them
            return Refused("not a pickle of protocol 2 or later")
        return data
    if flags == FLAG_TEXT:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return Refused("text that is not UTF-8")
        return data
    if flags in (FLAG_INTEGER, FLAG_LONG):
        return Refused("an integer, not a pickle")
    if flags == 0:
        return Refused("raw bytes, not a pickle")
    return Refused(f"unknown memcached flags {flags}")


def _bad_key(key: str) -> str | None:
    data = key.encode("utf-8", "replace")
    if not data or len(data) > MAX_KEY_BYTES:
        return "bad memcached key (length)"
    if any(byte <= 32 or byte == 127 for byte in data):
        return "bad memcached key (space or control character)"
    return None


# --- the protocol ---------------------------------------------------------------------------


class _ProtocolError(Exception):
    """The reply went out of step; what was read so far stands, the rest is refused."""


class _Gone(SourceUnavailable):
    """The connection failed or was closed before a reply: worth one retry if it was kept."""


class _Connection:
    """One server's connection, used by one request at a time."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def _unavailable(self, what: str) -> SourceUnavailable:
        return SourceUnavailable(f"memcached {self.server.address}: {what}")

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None:
            return self._reader, self._writer
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                if self.server.path:
                    pair = await asyncio.open_unix_connection(self.server.path, limit=_MAX_LINE)
                else:
                    pair = await asyncio.open_connection(
                        self.server.host, self.server.port, limit=_MAX_LINE
                    )
        except TimeoutError:
            raise self._unavailable("connection timed out") from None
        except OSError as error:
            raise self._unavailable(one_line(error)) from None
        self._reader, self._writer = pair
        return pair

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def request(
        self, command: bytes, read: Callable[[asyncio.StreamReader], Awaitable[T]]
    ) -> T:
        """Send `command`, and `read` its reply, one request at a time on this connection."""
        async with self.lock:
            reused = self._reader is not None
            try:
                return await self._request(command, read)
            except _Gone:
                if not reused:
                    raise
            # A connection kept from an earlier read may have been closed by the server
            # since (a restart, an idle timeout): one more try, on a fresh one.
            return await self._request(command, read)

    async def _request(
        self, command: bytes, read: Callable[[asyncio.StreamReader], Awaitable[T]]
    ) -> T:
        reader, writer = await self._open()
        done = False
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                writer.write(command)
                await writer.drain()
                result = await read(reader)
            done = True
            return result
        except TimeoutError:
            raise self._unavailable("timed out") from None
        except OSError as error:
            raise _Gone(f"memcached {self.server.address}: {one_line(error)}") from None
        finally:
            if not done:  # never reuse a connection left mid-reply
                await self.close()

    async def get_many(self, keys: list[str]) -> dict[str, bytes | Refused]:
        asked = set(keys)

        async def read(reader: asyncio.StreamReader) -> dict[str, bytes | Refused]:
            return await self._read_values(reader, asked)

        return await self.request(b"get " + " ".join(keys).encode() + b"\r\n", read)

    async def _read_values(
        self, reader: asyncio.StreamReader, asked: set[str]
    ) -> dict[str, bytes | Refused]:
        found: dict[str, bytes | Refused] = {}
        first = True
        try:
            while True:
                line = await self._line(reader, first)
                if line == b"END":
                    return found
                parts = line.split(b" ")
                if first and parts[0] in (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR"):
                    raise self._unavailable(_printable(line))
                first = False
                if len(parts) not in (4, 5) or parts[0] != b"VALUE":
                    raise _ProtocolError("bad reply")
                key = parts[1].decode("utf-8", "replace")
                if key not in asked or key in found:
                    raise _ProtocolError("bad reply")
                # Flags are 32 bits; ten digits of length is far past any item size.
                if not parts[2].isdigit() or not parts[3].isdigit() or len(parts[3]) > 10:
                    raise _ProtocolError("bad reply")
                flags, length = int(parts[2]), int(parts[3])
                if flags >= 1 << 32:
                    raise _ProtocolError("bad reply")
                if length > MAX_VALUE_BYTES:
                    await _drain(reader, length + 2)
                    found[key] = Refused("too large")
                    continue
                try:
                    block = await reader.readexactly(length + 2)
                except asyncio.IncompleteReadError:
                    found[key] = Refused("truncated reply")
                    raise _ProtocolError("truncated reply") from None
                if block[-2:] != b"\r\n":
                    found[key] = Refused("bad reply")
                    raise _ProtocolError("bad reply")
                found[key] = unwrap(flags, block[:-2])
        except _ProtocolError as error:
            for key in asked - found.keys():
                found[key] = Refused(str(error))
            raise _CutShort(found) from None

    async def _line(self, reader: asyncio.StreamReader, first: bool) -> bytes:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError as error:
            if first and not error.partial:  # gone before replying at all
                raise _Gone(f"memcached {self.server.address}: closed the connection") from None
            raise _ProtocolError("truncated reply") from None
        except asyncio.LimitOverrunError:
            raise _ProtocolError("bad reply") from None
        return line[:-2]

    async def version(self) -> str:
        line = await self.request(b"version\r\n", self._version_line)
        if not line.startswith(b"VERSION "):
            raise self._unavailable(f"unexpected reply to version: {_printable(line)}")
        return _printable(line[len(b"VERSION ") :].strip())

    async def _version_line(self, reader: asyncio.StreamReader) -> bytes:
        try:
            return await self._line(reader, True)
        except _ProtocolError as error:
            raise self._unavailable(str(error)) from None


class _CutShort(Exception):
    """A reply that went out of step: the values read, and a Refused for the rest."""

    def __init__(self, found: dict[str, bytes | Refused]) -> None:
        super().__init__("cut short")
        self.found = found


async def _drain(reader: asyncio.StreamReader, count: int) -> None:
    """Read and drop `count` bytes in bounded chunks (an oversize value, unread)."""
    while count > 0:
        chunk = await reader.read(min(count, _DRAIN_CHUNK))
        if not chunk:
            raise _ProtocolError("truncated reply")
        count -= len(chunk)


def _printable(data: bytes) -> str:
    text = data[:80].decode("ascii", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)


class MemcachedReader:
    """CacheReader for Django's PyMemcacheCache and PyLibMCCache (module docstring)."""

    def __init__(self, settings: CacheSettings) -> None:
        client = settings.client or "pymemcache"
        if client not in CLIENTS:
            raise ConfigError(f"cache client must be one of {', '.join(CLIENTS)}")
        self._client = client
        self._servers = parse_location(settings.location)
        self._connections = [_Connection(server) for server in self._servers]

    async def get_many(self, keys: list[str]) -> dict[str, bytes | Refused]:
        result: dict[str, bytes | Refused] = {}
        batches: list[list[str]] = [[] for _ in self._servers]
        for key in dict.fromkeys(keys):  # once each, in order
            bad = _bad_key(key)
            if bad is not None:
                result[key] = Refused(bad)
            else:
                batches[place(key, self._servers, self._client)].append(key)
        pairs = zip(self._connections, batches, strict=True)
        jobs = [self._one(conn, batch) for conn, batch in pairs if batch]
        # Every server's read runs to its end (none is left mid-reply); then the first
        # unreachable one is the error.
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            result.update(outcome)
        return result

    @staticmethod
    async def _one(conn: _Connection, batch: list[str]) -> dict[str, bytes | Refused]:
        try:
            return await conn.get_many(batch)
        except _CutShort as cut:
            return cut.found

    async def version(self) -> str:
        outcomes = await asyncio.gather(
            *(conn.version() for conn in self._connections), return_exceptions=True
        )
        versions: list[str] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            versions.append(outcome)
        return "memcached " + ", ".join(dict.fromkeys(versions))

    async def close(self) -> None:
        for conn in self._connections:
            await conn.close()
