"""MemcachedReader against real memcached servers, with values written by Django's own
PyMemcacheCache and PyLibMCCache; hostile values planted with raw `set`s."""

from __future__ import annotations

import asyncio
import importlib.util
import pickle
import tempfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from qwatch.config.settings import CacheSettings
from qwatch.errors import ConfigError, SourceUnavailable
from qwatch.sources.cache_memcached import (
    MemcachedReader,
    Server,
    murmur3_32,
    parse_location,
    place,
)
from qwatch.sources.cache_reader import MAX_VALUE_BYTES, Refused
from tests.django_cache import django_cache_run, write_values
from tests.helpers import free_port
from tests.plugins.memcached_server import MemcachedServer, MemcachedServerFactory

BACKENDS = {
    "pymemcache": "django.core.cache.backends.memcached.PyMemcacheCache",
    "pylibmc": "django.core.cache.backends.memcached.PyLibMCCache",
}
CLIENTS = [
    "pymemcache",
    pytest.param(
        "pylibmc",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("pylibmc") is None, reason="pylibmc not installed"
        ),
    ),
]


def reader_for(location: str, client: str = "pymemcache") -> MemcachedReader:
    return MemcachedReader(CacheSettings(backend="memcached", location=location, client=client))


def server_stats(server: MemcachedServer) -> tuple[int, int]:
    """(get_hits, get_misses) of a server."""
    lines = server.raw_command(b"stats\r\n", until=b"END\r\n").decode().splitlines()
    stats = dict(line.split()[1:3] for line in lines if line.startswith("STAT "))
    return int(stats["get_hits"]), int(stats["get_misses"])


def expected_bytes(written: dict[str, list[str]]) -> dict[str, bytes]:
    return {key: bytes.fromhex(data) for key, (_kind, data) in written.items()}


@pytest.fixture
async def readers() -> AsyncIterator[Callable[..., MemcachedReader]]:
    made: list[MemcachedReader] = []

    def make(location: str, client: str = "pymemcache") -> MemcachedReader:
        made.append(reader_for(location, client))
        return made[-1]

    yield make
    for reader in made:
        await reader.close()


@pytest.mark.parametrize("client", CLIENTS)
async def test_reads_back_what_django_pickled_in_one_multi_get(
    client: str, memcached_server: MemcachedServer, readers: Callable[..., MemcachedReader]
) -> None:
    caches = {"default": {"BACKEND": BACKENDS[client], "LOCATION": memcached_server.address}}
    written = write_values(caches, count=1000)
    reader = readers(memcached_server.address, client)
    keys = [*written, ":1:never-written"]

    found = await reader.get_many(keys)

    assert found == expected_bytes(written)  # byte for byte; the missing key absent
    text_key = next(key for key, (kind, _) in written.items() if kind == "text")
    assert found[text_key] == "a signed record: é".encode()
    assert all(
        value[:1] == b"\x80" for key, value in found.items() if key != text_key
    )  # how the source tells a pickle from text
    assert pickle.loads(found[":1:rec7"]) == ["django_q:site:cluster:7", 7, {"n": 7}]  # type: ignore[arg-type]
    # Each key was asked once: 1001 hits and the one miss.
    assert server_stats(memcached_server)[:2] == (1001, 1)


@pytest.mark.parametrize("client", CLIENTS)
async def test_multi_server_keys_are_asked_where_the_client_put_them(
    client: str,
    memcached_server_factory: MemcachedServerFactory,
    readers: Callable[..., MemcachedReader],
) -> None:
    first, second = memcached_server_factory(), memcached_server_factory()
    location = f"{first.address},{second.address}"
    caches = {"default": {"BACKEND": BACKENDS[client], "LOCATION": location}}
    written = write_values(caches, count=200)
    on_first, on_second = first.raw_keys(), second.raw_keys()
    assert on_first and on_second  # both servers hold some of them
    servers = parse_location(location)
    for key in written:
        assert key in (on_first, on_second)[place(key, servers, client)]

    found = await readers(location, client).get_many(list(written))

    assert found == expected_bytes(written)
    # Each server was asked only for its own keys: every get a hit, none a miss.
    assert server_stats(first)[:2] == (len(on_first), 0)
    assert server_stats(second)[:2] == (len(on_second), 0)


def test_placement_matches_pymemcache() -> None:
    from pymemcache.client.murmur3 import murmur3_32 as theirs
    from pymemcache.client.rendezvous import RendezvousHash

    servers = parse_location("10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11212")
    ring = RendezvousHash()
    for server in servers:
        ring.add_node(server.node)
    odd = ["", "é", "ĀĂ€", "日本語のキー"]  # code points over 255: pymemcache hashes those too
    for i in range(500):
        key = f":1:django_q:site{odd[i % 4]}:cluster:{i * 7919}"[: 1 + i % 60]
        assert murmur3_32(key) == theirs(key)
        assert servers[place(key, servers, "pymemcache")].node == ring.get_node(key)


def test_location_forms() -> None:
    assert parse_location("a:1;b,[::1]:3,unix:/run/m.sock,/tmp/x") == (
        Server(host="a", port=1),
        Server(host="b", port=11211),
        Server(host="::1", port=3),
        Server(path="/run/m.sock"),
        Server(path="/tmp/x"),
    )
    with pytest.raises(ConfigError, match="bad port"):
        parse_location("a:99999")
    with pytest.raises(ConfigError, match="cache client"):
        MemcachedReader(CacheSettings(backend="memcached", location="a:1", client="memcache"))


async def test_hostile_values_are_refused_one_by_one(
    memcached_server: MemcachedServer, readers: Callable[..., MemcachedReader]
) -> None:
    good = pickle.dumps(["django_q:site:cluster:1"], pickle.HIGHEST_PROTOCOL)
    bomb = zlib.compress(b"\x80" + b"\0" * (MAX_VALUE_BYTES + 1))
    planted: dict[str, tuple[int, bytes]] = {
        "good": (1, good),
        "good-zlib": (1 | 8, zlib.compress(good)),
        "raw": (0, b"\x80\x05raw"),
        "int": (2, b"12"),
        "long": (4, b"12"),
        "odd-flags": (64, good),
        "proto0": (1, pickle.dumps([1], 0)),
        "bad-zlib": (1 | 8, b"not zlib at all"),
        "bomb": (1 | 8, bomb),
        "bad-text": (16, b"\xff\xfe"),
        "huge": (1, b"\x80" * (MAX_VALUE_BYTES + 1)),
        "after-huge": (16, b"still read"),
    }
    for key, (flags, value) in planted.items():
        memcached_server.raw_set(key, value, flags)

    found = await readers(memcached_server.address).get_many(
        [*planted, "bad key", "ctl\x01", "x" * 251]
    )

    assert found == {
        "good": good,
        "good-zlib": good,
        "raw": Refused("raw bytes, not a pickle"),
        "int": Refused("an integer, not a pickle"),
        "long": Refused("an integer, not a pickle"),
        "odd-flags": Refused("unknown memcached flags 64"),
        "proto0": Refused("not a pickle of protocol 2 or later"),
        "bad-zlib": Refused("bad zlib"),
        "bomb": Refused("too large"),
        "bad-text": Refused("text that is not UTF-8"),
        "huge": Refused("too large"),
        "after-huge": b"still read",
        "bad key": Refused("bad memcached key (space or control character)"),
        "ctl\x01": Refused("bad memcached key (space or control character)"),
        "x" * 251: Refused("bad memcached key (length)"),
    }


SENT: dict[str, asyncio.Event] = {}


async def fake_server(reply: bytes, *, hold: bool = False) -> tuple[asyncio.Server, str]:
    """A server that answers any request with `reply`, then closes (or holds) the connection:
    what a real memcached never sends. SENT[address] is set once the reply is written."""
    sent = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n")
        writer.write(reply)
        await writer.drain()
        sent.set()
        if hold:
            await asyncio.Event().wait()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    SENT[address] = sent
    return server, address


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (  # cut in the middle of the second value
            b"VALUE a 16 2\r\nok\r\nVALUE b 16 10\r\nabc",
            {"a": b"ok", "b": Refused("truncated reply"), "c": Refused("truncated reply")},
        ),
        (  # a value not followed by CRLF: out of step
            b"VALUE a 16 2\r\nokXXVALUE b 16 2\r\nok\r\nEND\r\n",
            {"a": Refused("bad reply"), "b": Refused("bad reply"), "c": Refused("bad reply")},
        ),
        (  # a key that was not asked for
            b"VALUE a 16 2\r\nok\r\nVALUE zz 16 2\r\nok\r\nEND\r\n",
            {"a": b"ok", "b": Refused("bad reply"), "c": Refused("bad reply")},
        ),
        (  # a length that is not a number
            b"VALUE a 16 -2\r\nEND\r\n",
            {"a": Refused("bad reply"), "b": Refused("bad reply"), "c": Refused("bad reply")},
        ),
        (  # flags past 32 bits
            b"VALUE a 16 2\r\nok\r\nVALUE b 99999999999999999999 2\r\nok\r\nEND\r\n",
            {"a": b"ok", "b": Refused("bad reply"), "c": Refused("bad reply")},
        ),
        (  # a value longer than MAX_VALUE_BYTES, then the rest: skipped unread
            b"VALUE a 16 4194305\r\n" + b"x" * 4194305 + b"\r\nVALUE c 16 2\r\nok\r\nEND\r\n",
            {"a": Refused("too large"), "c": b"ok"},
        ),
    ],
)
async def test_broken_replies_refuse_what_they_break(
    reply: bytes, expected: dict[str, bytes | Refused]
) -> None:
    server, address = await fake_server(reply)
    reader = reader_for(address)
    try:
        assert await reader.get_many(["a", "b", "c"]) == expected
    finally:
        await reader.close()
        server.close()
        await server.wait_closed()


async def test_server_error_is_source_unavailable() -> None:
    server, address = await fake_server(b"SERVER_ERROR out of memory\r\n")
    reader = reader_for(address)
    try:
        with pytest.raises(SourceUnavailable, match=f"memcached {address}: SERVER_ERROR out"):
            await reader.get_many(["a"])
    finally:
        await reader.close()
        server.close()
        await server.wait_closed()


async def test_a_cancelled_read_drops_its_connection() -> None:
    """A read cancelled mid-reply must not leave the rest of the reply for the next one."""
    server, address = await fake_server(b"VALUE a 16 2\r\nok\r\n", hold=True)
    reader = reader_for(address)
    try:
        task = asyncio.create_task(reader.get_many(["a"]))
        await asyncio.wait_for(SENT[address].wait(), 5)  # the reply's END still to come
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert reader._connections[0]._reader is None  # closed, not kept for the next read
    finally:
        await reader.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("how", ["never there", "stopped"])
async def test_unreachable_server_is_one_line_naming_it(
    how: str, memcached_server_factory: MemcachedServerFactory
) -> None:
    if how == "stopped":
        server = memcached_server_factory()
        address = server.address
        reader = reader_for(address)
        assert await reader.version()
        server.stop()
    else:
        address = f"127.0.0.1:{free_port()}"
        reader = reader_for(address)
    try:
        with pytest.raises(SourceUnavailable) as raised:
            await reader.get_many(["a"])
        message = str(raised.value)
        assert message.startswith(f"memcached {address}: ")
        assert "\n" not in message
    finally:
        await reader.close()


async def test_version_names_memcached(
    memcached_server_factory: MemcachedServerFactory, readers: Callable[..., MemcachedReader]
) -> None:
    first, second = memcached_server_factory(), memcached_server_factory()
    version = await readers(f"{first.address},{second.address}").version()
    assert version.startswith("memcached 1.")
    assert "," not in version  # the same version once


async def _gather(*jobs: Awaitable[object]) -> list[object]:
    return list(await asyncio.gather(*jobs))


async def test_concurrent_reads_share_a_connection_safely(
    memcached_server: MemcachedServer, readers: Callable[..., MemcachedReader]
) -> None:
    for i in range(50):
        memcached_server.raw_set(f"k{i}", f"v{i}".encode(), 16)
    reader = readers(memcached_server.address)
    results = await _gather(*(reader.get_many([f"k{i}", f"k{i + 1}"]) for i in range(49)))
    for i, found in enumerate(results):
        assert found == {f"k{i}": f"v{i}".encode(), f"k{i + 1}": f"v{i + 1}".encode()}


async def test_a_restarted_server_is_read_again_at_once(
    memcached_server: MemcachedServer, readers: Callable[..., MemcachedReader]
) -> None:
    """The connection kept from the last read is dead after a restart: retried once."""
    reader = readers(memcached_server.address)
    memcached_server.raw_set("k", b"before", 16)
    assert await reader.get_many(["k"]) == {"k": b"before"}
    memcached_server.restart()
    memcached_server.raw_set("k", b"after", 16)
    assert await reader.get_many(["k"]) == {"k": b"after"}


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_unix_socket_location(
    client: str,
    memcached_server_factory: MemcachedServerFactory,
    readers: Callable[..., MemcachedReader],
) -> None:
    with tempfile.TemporaryDirectory(prefix="qw-mc-") as directory:  # short: sockaddr_un
        server = memcached_server_factory(unix_socket=f"{directory}/m.sock")
        caches = {"default": {"BACKEND": BACKENDS[client], "LOCATION": server.address}}
        written = write_values(caches, count=10)
        reader = readers(server.address, client)
        assert await reader.get_many(list(written)) == expected_bytes(written)
        assert (await reader.version()).startswith("memcached 1.")
        await reader.close()
        server.stop()


@pytest.mark.parametrize("client", CLIENTS)
async def test_expired_entries_are_absent(
    client: str, memcached_server: MemcachedServer, readers: Callable[..., MemcachedReader]
) -> None:
    """memcached expires its own; Django's timeout 0 ("set and expire") is the case to read."""
    caches = {"default": {"BACKEND": BACKENDS[client], "LOCATION": memcached_server.address}}
    live, gone = django_cache_run(
        caches,
        """
cache.set("live", ["a"], 60)
cache.set("gone", ["b"], 0)
result = [cache.make_key("live"), cache.make_key("gone")]
""",
    )
    found = await readers(memcached_server.address, client).get_many([live, gone])
    assert list(found) == [live]
