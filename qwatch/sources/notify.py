"""Keyspace notifications, where the server already sends them: record keys as they are written.

qwatch never changes server configuration: `notify-keyspace-events` is read (CONFIG GET, when
the user may) and used only if it already covers string commands. A subscriber is a second
connection (a subscribed connection can send nothing else) that collects the site's record
keys until the next poll takes them. Notifications are fire-and-forget: any lost while the
subscriber reconnects are found by the incremental SCAN, which keeps running.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from qwatch.config import RedisSettings
from qwatch.sources.resp import ReplyParser

# Events that end a key: not a reason to read it.
_GONE = frozenset((b"del", b"expired", b"evicted", b"rename_from"))


def channel_for(flags: str, db: int, prefix: bytes, escaped: bytes) -> tuple[str, bytes] | None:
    """What to subscribe to given the server's `notify-keyspace-events` flags, or None.

    Keyspace events (K) name the key in the channel, so a pattern on the site's prefix gets
    only its keys; keyevent events (E) of `set` carry every key set in the database and are
    filtered here. Either needs the string class ($), or A (all classes).
    """
    strings = "$" in flags or "A" in flags
    if not strings:
        return None
    if "K" in flags:
        return "PSUBSCRIBE", f"__keyspace@{db}__:".encode() + escaped + b"*"
    if "E" in flags:
        return "SUBSCRIBE", f"__keyevent@{db}__:set".encode()
    return None


def keys_of(message: Any, prefix: bytes, space: bytes) -> bytes | None:
    """The site's record key a pub/sub message names, or None."""
    if not isinstance(message, list) or not message:
        return None
    if message[0] == b"pmessage" and len(message) == 4:  # keyspace: channel names the key
        channel, event = message[2], message[3]
        if isinstance(channel, bytes) and channel.startswith(space) and event not in _GONE:
            key = channel[len(space) :]
            return key if key.startswith(prefix) else None
    elif message[0] == b"message" and len(message) == 3:  # keyevent set: payload is the key
        key = message[2]
        return key if isinstance(key, bytes) and key.startswith(prefix) else None
    return None


def _command(*args: bytes | str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Subscriber(asyncio.Protocol):
    def __init__(self, prefix: bytes, space: bytes) -> None:
        self.prefix, self.space = prefix, space
        self.keys: dict[bytes, None] = {}
        self.lost = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._parser = ReplyParser(self._reply)
        self._subscribed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed(data)
        except Exception:  # garbage: nothing after it can be trusted
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("connection lost"))

    def _reply(self, reply: Any) -> None:
        if self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(reply)
            # Messages may follow in the same chunk, before the caller resumes.
            if isinstance(reply, list) and reply and reply[0] in (b"subscribe", b"psubscribe"):
                self._subscribed = True
        elif self._subscribed:
            key = keys_of(reply, self.prefix, self.space)
            if key is not None:
                self.keys[key] = None

    async def call(self, *args: bytes | str | int) -> Any:
        assert self.transport is not None
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.transport.write(_command(*args))
        return await waiter


class KeyspaceWatch:
    """A subscribed connection collecting the site's record keys; `take()` empties it."""

    def __init__(self, protocol: _Subscriber) -> None:
        self._protocol = protocol

    @property
    def alive(self) -> bool:
        return not self._protocol.lost.is_set()

    def take(self) -> list[bytes]:
        keys, self._protocol.keys = self._protocol.keys, {}
        return list(keys)

    async def close(self) -> None:
        transport = self._protocol.transport
        if transport is not None and self.alive:
            transport.close()
            try:
                async with asyncio.timeout(1.0):
                    await self._protocol.lost.wait()
            except TimeoutError:
                transport.abort()


async def subscribe(
    settings: RedisSettings, command: str, channel: bytes, prefix: bytes
) -> KeyspaceWatch:
    """Connect, authenticate, subscribe; raises OSError/TimeoutError/ConnectionError or
    RuntimeError (a refused command) for the caller to treat as "no notifications"."""
    from qwatch.sources.redis import _tls_context  # one TLS set-up for both connections

    loop = asyncio.get_running_loop()
    space = b""
    if command == "PSUBSCRIBE":
        space = channel[: channel.index(b":") + 1]
    factory = lambda: _Subscriber(prefix, space)  # noqa: E731
    async with asyncio.timeout(settings.connect_timeout):
        if settings.unix_socket_path:
            transport, protocol = await loop.create_unix_connection(
                factory, settings.unix_socket_path
            )
        else:
            tls = _tls_context(settings) if settings.ssl else None
            transport, protocol = await loop.create_connection(
                factory, settings.host, settings.port, ssl=tls
            )
    try:
        async with asyncio.timeout(settings.command_timeout):
            if settings.username or settings.password:
                credentials = [settings.password or ""]
                if settings.username:
                    credentials.insert(0, settings.username)
                reply = await protocol.call("AUTH", *credentials)
                if not isinstance(reply, bytes):
                    raise RuntimeError("AUTH refused")
            reply = await protocol.call(command, channel)
            if not isinstance(reply, list):
                raise RuntimeError(f"{command} refused")
    except BaseException:
        transport.abort()
        raise
    return KeyspaceWatch(protocol)
