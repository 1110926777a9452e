"""The only Redis I/O in qwatch: connect, read a site's live Stats and backlog, the daemon lock.

qwatch owns the connection instead of using asyncio-redis' Connection/Pool: those cannot
speak TLS and reconnect forever in the background, while qwatch needs TLS, bounded waits
and a caller that decides when to try again. So we build the library's protocol on our own
transport and drive it through its raw query machinery (`_query`), which also lets us send
commands it does not wrap (ACL `AUTH user pass`, `SCAN … COUNT`, `EVAL`).
"""

from __future__ import annotations

import asyncio
import operator
import socket
import ssl
from datetime import UTC, datetime
from typing import Any

import asyncio_redis
from asyncio_redis.encoders import BytesEncoder

# Private, but asyncio-redis is pinned to 0.16: these are what its own commands use.
from asyncio_redis.protocol import _NoTransaction

from qwatch.config import RedisSettings, Site
from qwatch.decode import DecodeError, DecodeMemo, Decoder
from qwatch.errors import SourceUnavailable
from qwatch.sources.backlog import WRONG_TYPE, BacklogReader, redis_list_key
from qwatch.sources.resp import ProtocolError, ReplyParser
from qwatch.values import Backlog, ClusterStat, Poll, Skipped

SCAN_COUNT = 1000
MGET_BATCH = 500
# A closed transport reports connection_lost on a later loop turn; waiting for it keeps the
# protocol's reader task from outliving us, but a stuck TLS shutdown must not hold us up.
_CLOSE_WAIT_S = 1.0

# Holding the lock already: extend it. Otherwise take it only if free. One script, so the
# check and the write cannot interleave with the other daemon's.
_ACQUIRE_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
if redis.call('set', KEYS[1], ARGV[1], 'nx', 'px', ARGV[2]) then
  return 1
end
return 0
"""
# Never delete a lock that expired and was taken by the other daemon meanwhile.
_RELEASE_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class RedisUnavailable(SourceUnavailable):
    """Refused, timed out, unauthorised or dropped.

    The message is one line naming the address and the reason, never the password.
    """


class RedisReplyError(RedisUnavailable):
    """The server answered a command with an error; the connection itself is still usable."""

    def __init__(self, message: str, code: str, reply: str) -> None:
        super().__init__(message)
        self.code = code  # the error's first word: WRONGPASS, NOAUTH, WRONGTYPE, LOADING, …
        self.reply = reply  # the server's whole error line


# Sort keys made in C: a lambda per cluster cost a twentieth of a poll of 10,000.
_BY_HOST_AND_ID = operator.attrgetter("host", "cluster_id")
_BY_KEY = operator.attrgetter("key")


class _Protocol(asyncio_redis.RedisProtocol):  # type: ignore[misc]  # the library has no types
    """asyncio-redis' protocol, answered by our own reply parser (qwatch.sources.resp, much faster
    than its reader); it fails fast on garbage and says when it is closed."""

    def __init__(self) -> None:
        super().__init__(password=None, db=0, encoder=BytesEncoder())
        self.lost = asyncio.Event()
        self.failure: ProtocolError | None = None  # why we dropped the connection, if we did
        # An answer nobody asked for makes _push_answer raise IndexError: garbage too.
        self._replies = ReplyParser(self._push_answer)

    async def _reader_coroutine(self) -> None:
        return  # replies are parsed in data_received

    def data_received(self, data: bytes) -> None:
        if self.failure is not None:
            return
        try:
            self._replies.feed(data)
        except Exception as exc:
            # Nothing after a reply we cannot parse can be trusted: fail every waiter now
            # rather than leave them to run into their timeouts.
            self.failure = ProtocolError(f"not a Redis reply ({type(exc).__name__})")
            while self._queue:
                waiter = self._queue.popleft()
                if not waiter.done():
                    waiter.set_exception(self.failure)
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set()


def _encode(arg: bytes | str | int) -> bytes:
    if isinstance(arg, bytes):
        return arg
    return str(arg).encode()


def _describe(exc: BaseException) -> str:
    """A failure as a short reason; the OS and ssl messages never carry the password."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, FileNotFoundError):
        return "no such socket"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, asyncio_redis.NotConnectedError | ConnectionError | EOFError):
        return "connection lost"
    if isinstance(exc, ProtocolError):
        return f"protocol error: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return " ".join(str(exc).split()) or type(exc).__name__


def _tls_context(settings: RedisSettings) -> ssl.SSLContext:
    """The client's TLS context; a file that will not load is named in the error."""
    loading = f"ssl_ca_certs {settings.ssl_ca_certs}" if settings.ssl_ca_certs else "system CAs"
    try:
        context = ssl.create_default_context(cafile=settings.ssl_ca_certs)
        if not settings.ssl_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif not settings.ssl_check_hostname:
            context.check_hostname = False  # the chain is still verified against the CA
        if settings.ssl_certfile:
            loading = f"ssl_certfile {settings.ssl_certfile}"
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise RedisUnavailable(
            f"Redis {settings.address}: cannot load {loading} ({reason})"
        ) from None
    return context


class Connection:
    """One connection, authenticated and on its database; every command bounded in time."""

    def __init__(
        self, settings: RedisSettings, transport: asyncio.Transport, protocol: _Protocol
    ) -> None:
        self.settings = settings
        self._transport = transport
        self._protocol = protocol
        self._closed = False

    @property
    def is_open(self) -> bool:
        return not self._closed and self._protocol.is_connected

    def _unavailable(self, reason: str) -> RedisUnavailable:
        return RedisUnavailable(f"Redis {self.settings.address}: {reason}")

    async def call(self, command: str, *args: bytes | str | int) -> Any:
        """Send one command, return its reply (bytes, int, None or nested lists of those).

        The message of any error names the command, never its arguments: AUTH's carry the
        password. A server error reply leaves the connection open; anything else closes it.
        """
        timeout = self.settings.command_timeout
        try:
            async with asyncio.timeout(timeout):
                reply = await self._protocol._query(
                    _NoTransaction, command.encode(), *map(_encode, args)
                )
                return reply
        except asyncio_redis.ErrorReply as exc:
            text = " ".join(str(exc).split())
            code = text.split(" ", 1)[0]
            reason = "authentication required" if code == "NOAUTH" else text
            raise RedisReplyError(
                f"Redis {self.settings.address}: {command} refused: {reason}", code, text
            ) from None
        except TimeoutError:
            await self.close(abort=True)
            raise self._unavailable(f"{command} timed out after {timeout}s") from None
        except (asyncio_redis.Error, OSError, EOFError, ProtocolError) as exc:
            await self.close(abort=True)
            # Garbage that arrived before we asked shows up here as a closed connection.
            raise self._unavailable(_describe(self._protocol.failure or exc)) from None

    async def close(self, *, abort: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        if abort:
            self._transport.abort()
        else:
            self._transport.close()
        try:
            async with asyncio.timeout(_CLOSE_WAIT_S):
                await self._protocol.lost.wait()
        except TimeoutError:
            self._transport.abort()

    async def _handshake(self) -> None:
        settings = self.settings
        if settings.username or settings.password:
            # asyncio-redis' auth() takes no user: an ACL login is `AUTH user pass`.
            credentials = [settings.password or ""]
            if settings.username:
                credentials.insert(0, settings.username)
            try:
                await self.call("AUTH", *credentials)
            except RedisReplyError as exc:
                raise self._unavailable(f"authentication failed ({exc.code})") from None
        if settings.db:
            try:
                await self.call("SELECT", settings.db)
            except RedisReplyError as exc:
                raise self._unavailable(f"cannot select db {settings.db} ({exc.reply})") from None


async def open_connection(settings: RedisSettings) -> Connection:
    """Connect, authenticate and select the database, or raise RedisUnavailable."""
    address = settings.address
    loop = asyncio.get_running_loop()
    tls = _tls_context(settings) if settings.ssl and not settings.unix_socket_path else None
    try:
        async with asyncio.timeout(settings.connect_timeout):
            if settings.unix_socket_path:
                transport, protocol = await loop.create_unix_connection(
                    _Protocol, settings.unix_socket_path
                )
            else:
                transport, protocol = await loop.create_connection(
                    _Protocol, settings.host, settings.port, ssl=tls
                )
    except TimeoutError:
        raise RedisUnavailable(
            f"Redis {address}: timed out after {settings.connect_timeout}s connecting"
        ) from None
    except OSError as exc:
        raise RedisUnavailable(f"Redis {address}: {_describe(exc)}") from None
    connection = Connection(settings, transport, protocol)
    try:
        await connection._handshake()
    except BaseException:  # cancelled too: the half-made connection is ours to close
        await connection.close(abort=True)
        raise
    return connection


def _glob_escape(text: bytes) -> bytes:
    """Quote MATCH's glob characters, so a site named `a*` does not read other sites' keys."""
    out = bytearray()
    for byte in text:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


class RedisSource:
    """A site's Redis connection, owned by qwatch: timeouts, TLS, auth, reconnect on demand."""

    def __init__(self, site: Site, decoder: Decoder | None = None) -> None:
        self.site = site
        if decoder is None:
            decoder = Decoder(site.name, site.secret_key, site.secret_key_fallbacks, site.time_zone)
        self._decoder = decoder
        self._connection: Connection | None = None
        self._connecting = asyncio.Lock()
        self._key_prefix = f"{site.cache_prefix or ''}django_q:{site.name}:cluster:".encode()
        # Decoded results by raw value, from the last poll only: a record rewritten with a
        # new timestamp is new bytes, so anything older can never hit again.
        self._decoded: dict[bytes, ClusterStat | str] = {}
        # What the decoder remembers per key: a rewritten record is new bytes, but most
        # often only a few values moved (its timestamp, queue sizes), and its layout did not
        # (record_memo.KeyMemo).
        self._memo: DecodeMemo = {}
        self._backlogs = BacklogReader(site)

    async def __aenter__(self) -> RedisSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _connect(self) -> Connection:
        # No retry here: a failed attempt raises, and the caller's backoff says when to retry.
        async with self._connecting:
            if self._connection is None or not self._connection.is_open:
                self._connection = None
                self._connection = await open_connection(self.site.redis)
            return self._connection

    async def poll(self) -> Poll:
        """SCAN + MGET + decode + LLEN. Raises RedisUnavailable; (re)connects lazily."""
        connection = await self._connect()
        keys = await self._scan(connection)
        values: list[bytes | None] = []
        for start in range(0, len(keys), MGET_BATCH):
            values += await connection.call("MGET", *keys[start : start + MGET_BATCH])
        skipped, backlogs = await self._backlog(connection)
        clusters, refused = self._decode_all(keys, values)
        return Poll(
            site=self.site.name,
            at=datetime.now(UTC),
            clusters=tuple(sorted(clusters, key=_BY_HOST_AND_ID)),
            skipped=tuple(sorted(skipped + refused, key=_BY_KEY)),
            backlogs=backlogs,
        )

    async def _scan(self, connection: Connection) -> list[bytes]:
        match = _glob_escape(self._key_prefix) + b"*"
        keys: dict[bytes, None] = {}  # SCAN may return a key twice while Redis rehashes
        cursor: bytes = b"0"
        while True:
            cursor, batch = await connection.call(
                "SCAN", cursor, "MATCH", match, "COUNT", SCAN_COUNT
            )
            keys.update(dict.fromkeys(batch))
            if cursor == b"0":
                return list(keys)

    async def _backlog(self, connection: Connection) -> tuple[list[Skipped], tuple[Backlog, ...]]:
        """Every queue's backlog (qwatch.sources.backlog), in one round trip for Redis."""
        backlogs = await self._backlogs.read(connection)
        # Someone else's value under a broker list's name must not hide the clusters.
        skipped = [
            Skipped(redis_list_key(b.queue), b.reason) for b in backlogs if b.reason == WRONG_TYPE
        ]
        return skipped, backlogs

    def _decode_all(
        self, keys: list[bytes], values: list[bytes | None]
    ) -> tuple[list[ClusterStat], list[Skipped]]:
        clusters: list[ClusterStat] = []
        skipped: list[Skipped] = []
        decoded: dict[bytes, ClusterStat | str] = {}
        for key, raw in zip(keys, values, strict=True):
            if raw is None:  # expired between SCAN and MGET, or not a string
                continue
            if raw in decoded:
                outcome = decoded[raw]
            else:
                outcome = self._decoded.get(raw) or self._decode(raw, key)
                decoded[raw] = outcome
            name = key.decode("utf-8", "backslashreplace")
            if isinstance(outcome, str):
                skipped.append(Skipped(name, outcome))
                continue
            # Django Q always files a record under its own id; one under another key is a
            # copy (anyone who can write to Redis can make one) and would show a cluster twice.
            key_id = name[len(self._key_prefix) :]
            if outcome.cluster_id != key_id:
                skipped.append(Skipped(name, f"record is for cluster {outcome.cluster_id}"))
                continue
            clusters.append(outcome)
        self._decoded = decoded
        if len(self._memo) > len(keys):
            present = set(keys)  # forget the keys that are gone
            self._memo = {k: v for k, v in self._memo.items() if k in present}
        return clusters, skipped

    def _decode(self, raw: bytes, key: bytes) -> ClusterStat | str:
        try:
            return self._decoder.decode(raw, self._memo, key)
        except DecodeError as exc:
            return exc.reason

    async def server_version(self) -> str:
        connection = await self._connect()
        info: bytes = await connection.call("INFO", "server")
        for line in info.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition(":")
            if name == "redis_version":
                return value.strip()
        raise RedisUnavailable(f"Redis {self.site.redis.address}: INFO has no redis_version")

    async def acquire_lock(self, key: str, token: str, ttl_s: float) -> bool:
        """SET key token NX PX; or extend it when we already hold it. True when we hold it."""
        if ttl_s <= 0:
            raise ValueError(f"lock ttl must be positive, not {ttl_s}")
        connection = await self._connect()
        ttl_ms = max(1, round(ttl_s * 1000))
        held: int = await connection.call("EVAL", _ACQUIRE_LUA, 1, key, token, ttl_ms)
        return held == 1

    async def release_lock(self, key: str, token: str) -> None:
        connection = await self._connect()
        await connection.call("EVAL", _RELEASE_LUA, 1, key, token)

    async def close(self) -> None:
        await self._backlogs.close()
        async with self._connecting:
            connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
