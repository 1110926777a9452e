"""Django's FileBasedCache read from outside the app, read-only.

Django keeps each key in `<LOCATION>/<md5(made key)>.djcache`: a pickled expiry (a float of
Unix time, or None for never) followed by zlib(pickle(value)). The expiry pickle is parsed
here by hand, strictly (protocol header, optional frame, one float/int/None, STOP): nothing
in the file is unpickled. An expired file is left out as Django's `get` would, but not
deleted (Django deletes it; qwatch changes nothing). Only regular files are read, opened
without following symlinks (a symlink in the directory is refused, wherever it points);
the file and its inflated pickle are bounded by MAX_VALUE_BYTES. The reads of a batch run in
one worker thread: a slow disk or network file system never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
import struct
import time

from qwatch.config.settings import CacheSettings
from qwatch.decode.record import inflate
from qwatch.errors import DecodeError, SourceUnavailable, one_line
from qwatch.sources.cache_reader import MAX_VALUE_BYTES, Refused

SUFFIX = ".djcache"  # FileBasedCache.cache_suffix
_FRAME = 0x95
_STOP = ord(".")
# Opcode of the expiry's one value -> width of its argument (the struct format).
_VALUE_OPCODES: dict[int, str] = {
    ord("G"): ">d",  # BINFLOAT: what time.time() + timeout pickles as
    ord("K"): "<B",  # BININT1, BININT2, BININT: an int, should a writer store one
    ord("M"): "<H",
    ord("J"): "<i",
}
_NONE = ord("N")


def file_name(key: str) -> str:
    """The file Django's FileBasedCache keeps the (made) key in."""
    return hashlib.md5(key.encode(), usedforsecurity=False).hexdigest() + SUFFIX


def parse_expiry(data: bytes) -> tuple[float | None, int]:
    """The expiry pickle at the start of a cache file: (expiry or None, where it ends).
    DecodeError for anything but the few pickles Django writes there."""
    if len(data) < 4 or data[0] != 0x80 or not 2 <= data[1] <= 5:
        raise DecodeError("bad expiry header")
    i = 2
    if data[i] == _FRAME:
        i += 9
    if i >= len(data):
        raise DecodeError("bad expiry header")
    op = data[i]
    i += 1
    expiry: float | None
    if op == _NONE:
        expiry = None
    elif op in _VALUE_OPCODES:
        fmt = _VALUE_OPCODES[op]
        width = struct.calcsize(fmt)
        if i + width > len(data):
            raise DecodeError("bad expiry header")
        (expiry,) = struct.unpack_from(fmt, data, i)
        i += width
    else:
        raise DecodeError("bad expiry header")
    if i >= len(data) or data[i] != _STOP:
        raise DecodeError("bad expiry header")
    return expiry, i + 1


def unwrap_file(data: bytes, now: float) -> bytes | Refused | None:
    """A cache file's value pickle; None when expired (or empty, which Django counts so)."""
    if not data:
        return None
    try:
        expiry, start = parse_expiry(data)
        if expiry is not None and expiry < now:
            return None
        value = inflate(data[start:], MAX_VALUE_BYTES)
    except DecodeError as error:
        return Refused(error.reason)
    if value[:1] != b"\x80":
        return Refused("not a pickle of protocol 2 or later")
    return value


def _read_bounded(fd: int, size: int) -> bytes:
    """The file's bytes, at most MAX_VALUE_BYTES + 1. One read of the size fstat gave (a
    read of the bound itself would allocate 4 MB per file); more only if it has grown."""
    data = os.read(fd, size + 1)
    if len(data) <= size:
        return data
    parts = [data]
    total = len(data)
    while total <= MAX_VALUE_BYTES:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


class FileCacheReader:
    """CacheReader for Django's FileBasedCache (module docstring)."""

    def __init__(self, settings: CacheSettings) -> None:
        self._dir = settings.location

    def _unavailable(self, error: OSError) -> SourceUnavailable:
        return SourceUnavailable(f"file cache {self._dir}: {one_line(error)}")

    async def get_many(self, keys: list[str]) -> dict[str, bytes | Refused]:
        return await asyncio.to_thread(self._read_batch, list(dict.fromkeys(keys)))

    def _read_batch(self, keys: list[str]) -> dict[str, bytes | Refused]:
        try:
            dir_fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as error:
            raise self._unavailable(error) from None
        try:
            now = time.time()
            found: dict[str, bytes | Refused] = {}
            for key in keys:
                value = self._read_one(dir_fd, file_name(key), now)
                if value is not None:
                    found[key] = value
            return found
        finally:
            os.close(dir_fd)

    @staticmethod
    def _read_one(dir_fd: int, name: str, now: float) -> bytes | Refused | None:
        # O_NOFOLLOW: a symlink is refused, not followed; O_NONBLOCK: a FIFO planted under
        # the name does not hang the open (and is refused as not a regular file).
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink
                return Refused("a symlink, not followed")
            return Refused(f"unreadable: {one_line(error)}")
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return Refused("not a regular file")
            if info.st_size > MAX_VALUE_BYTES:
                return Refused("too large")
            data = _read_bounded(fd, info.st_size)
        except OSError as error:
            return Refused(f"unreadable: {one_line(error)}")
        finally:
            os.close(fd)
        if len(data) > MAX_VALUE_BYTES:
            return Refused("too large")
        return unwrap_file(data, now)

    async def version(self) -> str:
        return "Django file cache"

    async def close(self) -> None:
        return None
