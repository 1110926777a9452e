"""Redis replies (RESP2) parsed from bytes as they arrive: pure, no I/O.

The Redis protocol (sources.redis) feeds `ReplyParser` what the socket gives it, in chunks
of any size, instead of asyncio-redis' own reader. That one awaits a StreamReader for every
line of a reply and hands arrays out item by item through futures: some 5 us per element,
which was a third of reading a site's records (an MGET element each, a SCAN element each).
This one parses straight from one buffer and answers with plain values.

Incomplete input is simply kept for the next chunk; a reply is handed out only once every
byte of it has arrived, so where the chunks split a reply cannot change what it parses to.
A bulk string's chunks are only appended until it is whole (then parsed from one `bytes`
copy), so a large value costs linear time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asyncio_redis import ErrorReply

from qwatch.errors import Unavailable


class ProtocolError(Unavailable):
    """The server sent something that is not a Redis reply."""


class ReplyParser:
    """Calls `on_reply` with each complete reply, in order: bytes (bulk and status replies),
    int, None (nil bulk string or array), lists of those (nested as in SCAN's), or
    asyncio_redis.ErrorReply (what asyncio-redis' protocol raises in the waiter)."""

    __slots__ = ("_arrays", "_buffer", "_need", "_on_reply")

    def __init__(self, on_reply: Callable[[Any], None]) -> None:
        self._on_reply = on_reply
        self._buffer = bytearray()  # what arrived and is not parsed yet
        self._need = 0  # how long the buffer must be before parsing can get further
        self._arrays: list[tuple[list[Any], int]] = []  # open arrays: (items so far, length)

    @property
    def idle(self) -> bool:
        """Whether no reply is partly received."""
        return not self._buffer and not self._arrays

    def feed(self, data: bytes) -> None:
        """Parse what `data` completes. Raises on what is not a reply (ProtocolError, or
        ValueError for a length that is not a number) and passes on what `on_reply`
        raises; nothing after that can be trusted, so drop the parser then."""
        self._buffer += data
        if len(self._buffer) < self._need:
            return  # still inside a bulk string: no copy, no parse (a big value stays linear)
        # Parsed from bytes, not the bytearray: each bulk string is then one slice, not a
        # slice and a copy, a third of the parsing time of an MGET.
        buffer = bytes(self._buffer)
        arrays = self._arrays
        find = buffer.find
        pos, end = 0, len(buffer)
        need = 0
        try:
            while pos < end:
                line_end = find(b"\r\n", pos)
                if line_end < 0:
                    return
                kind = buffer[pos]
                item: Any
                if kind == 36:  # $ bulk string
                    length = int(buffer[pos + 1 : line_end])
                    if length < 0:
                        item, pos = None, line_end + 2
                    else:
                        start = line_end + 2
                        stop = start + length
                        if stop + 2 > end:
                            need = stop + 2 - pos
                            return
                        if buffer[stop : stop + 2] != b"\r\n":
                            raise ProtocolError("bulk string not followed by CRLF")
                        item, pos = buffer[start:stop], stop + 2
                elif kind == 42:  # * array
                    length = int(buffer[pos + 1 : line_end])
                    pos = line_end + 2
                    if length > 0:
                        arrays.append(([], length))
                        continue
                    item = None if length < 0 else []
                elif kind == 58:  # : integer
                    item, pos = int(buffer[pos + 1 : line_end]), line_end + 2
                elif kind == 43:  # + status
                    item, pos = buffer[pos + 1 : line_end], line_end + 2
                elif kind == 45:  # - error
                    text = buffer[pos + 1 : line_end].decode("ascii")
                    item, pos = ErrorReply(text), line_end + 2
                else:
                    raise ProtocolError(f"unknown reply type {kind}")
                # The item completes the innermost open array, or it is a whole reply.
                while arrays:
                    items, length = arrays[-1]
                    items.append(item)
                    if len(items) < length:
                        break
                    arrays.pop()
                    item = items
                else:
                    self._on_reply(item)
        finally:
            del self._buffer[:pos]
            self._need = need
