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
import time
from datetime import UTC, datetime
from typing import Any

import asyncio_redis
from asyncio_redis.encoders import BytesEncoder

# Private, but asyncio-redis is pinned to 0.16: these are what its own commands use.
from asyncio_redis.protocol import _NoTransaction

from qwatch.config import RedisSettings, Site
from qwatch.decode import Decoder
from qwatch.errors import SourceUnavailable
from qwatch.sources.backlog import WRONG_TYPE, BacklogReader, redis_list_key
from qwatch.sources.decoding import PollDecoder
from qwatch.sources.discovery import DEFAULT_SHARE, MAX_CALLS_PER_POLL, Discovery, ScanBudget
from qwatch.sources.notify import KeyspaceWatch, channel_for, subscribe
from qwatch.sources.resp import ProtocolError, ReplyParser
from qwatch.values import Backlog, Poll, Skipped

# The full sweep's COUNT: ten times fewer round trips than 1,000 for the same Redis time
# (docs/performance.md), each holding Redis for a few ms.
SCAN_COUNT = 10_000
MGET_BATCH = 500
COMMANDSTATS_EVERY_S = 30.0
WATCH_RETRY_S = 60.0  # asking CONFIG again whether notifications got enabled
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


def scan_usec(info: bytes) -> int | None:
    """SCAN's total usec in an `INFO commandstats` reply, or None when it has none yet."""
    for line in info.splitlines():
        if line.startswith(b"cmdstat_scan:"):
            for item in line[len(b"cmdstat_scan:") :].split(b","):
                name, _, value = item.partition(b"=")
                if name == b"usec":
                    return int(value)
    return None


class RedisSource:
    """A site's Redis connection, owned by qwatch: timeouts, TLS, auth, reconnect on demand."""

    def __init__(
        self, site: Site, decoder: Decoder | None = None, *, scan_share: float = DEFAULT_SHARE
    ) -> None:
        self.site = site
        self._records = PollDecoder.for_site(site, decoder)
        self._connection: Connection | None = None
        self._connecting = asyncio.Lock()
        self._key_prefix = f"{site.cache_prefix or ''}django_q:{site.name}:cluster:".encode()
        self._glob_prefix = _glob_escape(self._key_prefix)
        self._match = self._glob_prefix + b"*"
        self._discovery = Discovery(ScanBudget(scan_share))
        self._swept_on: Connection | None = None  # the connection the last sweep was on
        self._counted = 0  # COUNT sent since the last commandstats sample
        self.scan_counted = 0  # COUNT sent by the incremental SCAN in all (benchmarks read it)
        self._stats_usec: int | None = None  # SCAN's usec at that sample
        self._stats_due = 0.0
        self._stats_refused = False
        self._watch: KeyspaceWatch | None = None
        self._watch_retry_at = 0.0
        self.notifications: str | None = None  # the channel subscribed to, once it is
        self._backlogs = BacklogReader(site)
        self._holding = False  # the daemon's sampler lock, as the last acquire_lock found it

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
        """Read the site's records and backlog. Raises RedisUnavailable; (re)connects lazily.

        The first poll on a connection sweeps the whole keyspace (SCAN); later ones MGET the
        keys known so far and look for new ones within the SCAN budget and through keyspace
        notifications (sources.discovery).
        """
        connection = await self._connect()
        discovery = self._discovery
        if connection is not self._swept_on:  # a new connection: Redis may have restarted
            discovery.reset()
            self._stats_usec = None
        if discovery.needs_sweep:
            started = datetime.now(UTC)
            discovery.swept(await self._scan(connection), started)
            discovery.budget.earn(time.monotonic())  # the sweep is not paid from the budget
            self._swept_on = connection
        else:
            await self._take_notifications(connection)
            await self._discover(connection)
        keys = list(discovery.known)
        values: list[bytes | None] = []
        for start in range(0, len(keys), MGET_BATCH):
            values += await connection.call("MGET", *keys[start : start + MGET_BATCH])
        found_late = discovery.read(keys, values, datetime.now(UTC))
        skipped, backlogs = await self._backlog(connection)
        prefix = len(self._key_prefix)
        clusters, refused = await self._records.decode_all(keys, values, lambda name: name[prefix:])
        late: dict[str, datetime] = {}
        if found_late:
            cut = len(self._key_prefix)
            ids = {
                key[cut:].decode("utf-8", "backslashreplace"): since
                for key, since in found_late.items()
            }
            late = {
                stat.cluster_id: ids[stat.cluster_id] for stat in clusters if stat.cluster_id in ids
            }
        return Poll(
            site=self.site.name,
            at=datetime.now(UTC),
            clusters=tuple(sorted(clusters, key=_BY_HOST_AND_ID)),
            skipped=tuple(sorted(skipped + refused, key=_BY_KEY)),
            late=late,
            backlogs=backlogs,
        )

    async def _scan(self, connection: Connection) -> list[bytes]:
        """The full sweep: every key of the site, in as few round trips as SCAN allows."""
        keys: dict[bytes, None] = {}  # SCAN may return a key twice while Redis rehashes
        cursor: bytes = b"0"
        while True:
            cursor, batch = await connection.call(
                "SCAN", cursor, "MATCH", self._match, "COUNT", SCAN_COUNT
            )
            keys.update(dict.fromkeys(batch))
            if cursor == b"0":
                return list(keys)

    async def _discover(self, connection: Connection) -> None:
        """Continue the incremental SCAN as far as the budget allows."""
        discovery = self._discovery
        budget = discovery.budget
        budget.earn(time.monotonic())
        for _ in range(MAX_CALLS_PER_POLL):
            count = budget.next_count()
            if not count:
                break
            sent = time.perf_counter()
            cursor, batch = await connection.call(
                "SCAN", discovery.cursor, "MATCH", self._match, "COUNT", count
            )
            budget.spent(count, time.perf_counter() - sent)
            self._counted += count
            self.scan_counted += count
            discovery.scanned(cursor, batch, datetime.now(UTC))
            if cursor == b"0":
                break  # one pass per poll at most: a small keyspace is not walked again
        await self._sample_commandstats(connection)

    async def _sample_commandstats(self, connection: Connection) -> None:
        """Now and then, what SCAN really cost Redis: a tighter bound than our round trips."""
        now = time.monotonic()
        if self._stats_refused or now < self._stats_due:
            return
        self._stats_due = now + COMMANDSTATS_EVERY_S
        try:
            info: bytes = await connection.call("INFO", "commandstats")
        except RedisReplyError:  # INFO not allowed to this user: the round trips will do
            self._stats_refused = True
            return
        usec = scan_usec(info)
        if self._stats_usec is not None and usec is not None:
            self._discovery.budget.stated(usec - self._stats_usec, self._counted)
        self._stats_usec, self._counted = usec, 0

    async def _take_notifications(self, connection: Connection) -> None:
        """Keys named by keyspace notifications since the last poll, if the server sends them.

        Looked into from the second poll on, so a one-shot read never opens a subscriber.
        """
        watch = self._watch
        if watch is not None:
            if watch.alive:
                self._discovery.noticed(watch.take())
                return
            self._watch = None
            await watch.close()
        now = time.monotonic()
        if now < self._watch_retry_at:
            return
        self._watch_retry_at = now + WATCH_RETRY_S
        try:
            reply = await connection.call("CONFIG", "GET", "notify-keyspace-events")
        except RedisReplyError:  # CONFIG is not for this user (or renamed away): never mind
            self._watch_retry_at = float("inf")
            return
        flags = (
            reply[1].decode("ascii", "replace")
            if isinstance(reply, list) and len(reply) == 2
            else ""
        )
        channel = channel_for(flags, self.site.redis.db, self._key_prefix, self._glob_prefix)
        if channel is None:
            return
        try:
            self._watch = await subscribe(self.site.redis, *channel, self._key_prefix)
        except (OSError, TimeoutError, ConnectionError, RuntimeError, RedisUnavailable):
            return  # the SCAN still finds every key; try again later
        self.notifications = channel[1].decode("utf-8", "backslashreplace")

    async def _backlog(self, connection: Connection) -> tuple[list[Skipped], tuple[Backlog, ...]]:
        """Every queue's backlog (qwatch.sources.backlog), in one round trip for Redis."""
        backlogs = await self._backlogs.read(connection)
        # Someone else's value under a broker list's name must not hide the clusters.
        skipped = [
            Skipped(redis_list_key(b.queue), b.reason) for b in backlogs if b.reason == WRONG_TYPE
        ]
        return skipped, backlogs

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
        reply: int = await connection.call("EVAL", _ACQUIRE_LUA, 1, key, token, ttl_ms)
        held = reply == 1
        if held and not self._holding:
            # Taking the site over: while standing by this source did not poll, so what it
            # knows of the record keys is old, and a cluster started meanwhile would wait
            # for the budgeted SCAN to come by. Sweep once, as after a reconnect.
            self._discovery.reset()
        self._holding = held
        return held

    async def release_lock(self, key: str, token: str) -> None:
        connection = await self._connect()
        await connection.call("EVAL", _RELEASE_LUA, 1, key, token)
        self._holding = False

    async def close(self) -> None:
        await self._backlogs.close()
        async with self._connecting:
            connection, self._connection = self._connection, None
        watch, self._watch = self._watch, None
        if watch is not None:
            await watch.close()
        if connection is not None:
            await connection.close()
