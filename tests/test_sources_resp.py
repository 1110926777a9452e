"""The RESP reply parser (qwatch.sources.resp) and the protocol it answers for (redis_source): pure,
no server. A socket splits replies anywhere, so every reply must parse the same whatever
the chunks; anything that is not a reply must fail every waiter at once."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest
from asyncio_redis import ErrorReply
from hypothesis import given, settings
from hypothesis import strategies as st

from qwatch.sources.redis import _Protocol
from qwatch.sources.resp import ProtocolError, ReplyParser
from tests.helpers import PAYLOADS

FUZZ = settings(max_examples=300, deadline=None, database=None)


class Status(bytes):
    """A `+` status reply (parsed to its bytes)."""


class Error(str):
    """A `-` error reply (parsed to an ErrorReply)."""


class NilArray:
    """`*-1`, which parses to None like a nil bulk string."""


def encode(value: Any) -> bytes:
    """`value` as a Redis server writes it."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, NilArray):
        return b"*-1\r\n"
    if isinstance(value, Status):
        return b"+" + value + b"\r\n"
    if isinstance(value, Error):
        return b"-" + value.encode("ascii") + b"\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(encode(item) for item in value)
    raise TypeError(value)


def expected(value: Any) -> Any:
    """What the parser should make of `value`, in the form `comparable` gives."""
    if isinstance(value, NilArray):
        return None
    if isinstance(value, Error):
        return ("error", str(value))
    if isinstance(value, Status):
        return bytes(value)
    if isinstance(value, list):
        return [expected(item) for item in value]
    return value


def comparable(reply: Any) -> Any:
    """A parsed reply with its ErrorReply made comparable, and the types checked."""
    if isinstance(reply, ErrorReply):
        return ("error", str(reply))
    if isinstance(reply, list):
        return [comparable(item) for item in reply]
    assert reply is None or type(reply) in (bytes, int), reply
    return reply


def parse(chunks: list[bytes]) -> list[Any]:
    replies: list[Any] = []
    parser = ReplyParser(replies.append)
    for chunk in chunks:
        parser.feed(chunk)
    assert parser.idle  # nothing left half-read
    return [comparable(reply) for reply in replies]


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(stream)]
    return [stream[start:stop] for start, stop in itertools.pairwise(bounds)]


ascii_line = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
scalars = st.one_of(
    st.binary(max_size=40),  # may hold "\r\n": a bulk string is counted, not scanned
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    ascii_line.map(lambda text: Status(text.encode())),
    ascii_line.map(Error),
    st.just(NilArray()),
)
replies = st.recursive(scalars, lambda children: st.lists(children, max_size=6), max_leaves=25)


@FUZZ
@given(st.lists(replies, min_size=1, max_size=5), st.data())
def test_replies_parse_the_same_however_they_are_split(values: list[Any], data: Any) -> None:
    stream = b"".join(map(encode, values))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    whole = parse([stream])
    assert whole == [expected(value) for value in values]
    assert parse(split(stream, cuts)) == whole


def test_byte_by_byte() -> None:
    values = [b"a\r\nb", None, -7, Status(b"OK"), Error("ERR no"), [[b"x", []], NilArray()]]
    stream = b"".join(map(encode, values))
    assert parse([stream[i : i + 1] for i in range(len(stream))]) == list(map(expected, values))


def records() -> list[bytes]:
    return [path.read_bytes().rstrip(b"\n") for path in sorted(PAYLOADS.iterdir())]


def test_scan_replies_in_random_chunks() -> None:
    """SCAN answers [cursor, [key, ...]]; a few pages of a thousand keys, pipelined."""
    rng = random.Random(6379)
    pages = [
        [str(rng.randrange(1, 1 << 30)).encode(), [b"django_q:q:cluster:%d" % n for n in keys]]
        for keys in (range(1000), range(1000, 1700), range(0))
    ]
    pages[-1][0] = b"0"  # the last page
    stream = b"".join(map(encode, pages))
    for _ in range(20):
        cuts = [rng.randrange(len(stream)) for _ in range(rng.randrange(1, 200))]
        assert parse(split(stream, cuts)) == pages


def test_large_mget_reply_in_random_chunks() -> None:
    """MGET of 500 keys (an MGET_BATCH): real records, with keys expired in between (nil)."""
    rng = random.Random(500)
    pool = records()
    values: list[bytes | None] = [
        rng.choice(pool) if rng.random() < 0.9 else None for _ in range(500)
    ]
    stream = encode(values)
    assert len(stream) > 200_000
    for max_chunk in (1 << 16, 4096, 1500, 7):  # a socket read, a TLS record, odd sizes
        chunks, at = [], 0
        while at < len(stream):
            size = rng.randrange(1, max_chunk + 1)
            chunks.append(stream[at : at + size])
            at += size
        assert parse(chunks) == [values]


def test_a_value_spanning_many_chunks_is_parsed_once_it_is_whole() -> None:
    """Until a bulk string's last byte is in, the chunks are only kept (no copy, no parse:
    a large value stays linear); the replies around it parse as ever."""
    value = bytes(range(256)) * 4096  # 1 MiB
    stream = encode([b"before", value, None]) + encode(7)
    replies: list[Any] = []
    parser = ReplyParser(replies.append)
    chunks = split(stream, list(range(1000, len(stream), 1000)))
    for chunk in chunks[:-1]:
        parser.feed(chunk)
        assert not replies and not parser.idle
    assert parser._need > len(value)  # what it waits for before parsing again
    parser.feed(chunks[-1])
    assert [comparable(reply) for reply in replies] == [[b"before", value, None], 7]
    assert parser.idle


@pytest.mark.parametrize(
    ("garbage", "error"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n", ProtocolError),  # not a reply type
        (b"$3\r\nabcXY", ProtocolError),  # bulk string longer than its count
        (b"$x\r\n", ValueError),
        (b"*two\r\n", ValueError),
        (b":12a\r\n", ValueError),
        (b"-\xff\r\n", ValueError),  # an error line that is not ASCII
    ],
)
def test_garbage_raises_after_the_replies_before_it(garbage: bytes, error: type) -> None:
    replies: list[Any] = []
    parser = ReplyParser(replies.append)
    with pytest.raises(error):
        parser.feed(b"+OK\r\n*2\r\n:1\r\n" + garbage)
    assert replies == [b"OK"]  # the reply before the garbage was answered


# --- the protocol: waiters ------------------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


def protocol_with_waiters(count: int) -> tuple[_Protocol, list[asyncio.Future[Any]]]:
    protocol = _Protocol()
    protocol.transport = FakeTransport()  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    waiters = [loop.create_future() for _ in range(count)]
    protocol._queue.extend(waiters)
    return protocol, waiters


async def test_waiters_are_answered_in_order_from_any_chunks() -> None:
    values = [[b"0", [b"k1", b"k2"]], [b"v1", None], 3, Error("WRONGTYPE no")]
    protocol, waiters = protocol_with_waiters(len(values))
    stream = b"".join(map(encode, values))
    for at in range(0, len(stream), 3):
        protocol.data_received(stream[at : at + 3])
    assert [waiter.result() for waiter in waiters[:3]] == values[:3]
    error = waiters[3].exception()
    assert isinstance(error, ErrorReply) and str(error) == "WRONGTYPE no"
    assert protocol.failure is None and protocol._replies.idle


@pytest.mark.parametrize("garbage", [b"HTTP/1.1 400 Bad Request\r\n", b"$3\r\nabcXY", b":x\r\n"])
async def test_garbage_fails_every_waiter_at_once(garbage: bytes) -> None:
    protocol, waiters = protocol_with_waiters(3)
    protocol.data_received(b":1\r\n" + garbage)
    assert waiters[0].result() == 1
    assert protocol.failure is not None and "not a Redis reply" in str(protocol.failure)
    assert all(waiter.exception() is protocol.failure for waiter in waiters[1:])
    assert protocol.transport.aborted  # type: ignore[attr-defined]
    protocol.data_received(b":2\r\n")  # nothing after garbage is read
    assert not protocol._queue


async def test_an_answer_nobody_asked_for_is_garbage() -> None:
    protocol, _ = protocol_with_waiters(0)
    protocol.data_received(b"+OK\r\n")
    assert protocol.failure is not None
    assert protocol.transport.aborted  # type: ignore[attr-defined]
