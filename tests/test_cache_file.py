"""FileCacheReader on directories written by Django's own FileBasedCache; hostile files
planted beside them."""

from __future__ import annotations

import os
import pickle
import time
import zlib
from pathlib import Path

import pytest

from qwatch.config.settings import CacheSettings
from qwatch.errors import DecodeError, SourceUnavailable
from qwatch.sources.cache_file import FileCacheReader, file_name, parse_expiry
from qwatch.sources.cache_reader import MAX_VALUE_BYTES, Refused
from tests.django_cache import django_cache_run, write_values

FILE_BACKEND = "django.core.cache.backends.filebased.FileBasedCache"


def reader_for(directory: Path | str) -> FileCacheReader:
    return FileCacheReader(CacheSettings(backend="file", location=str(directory)))


def cache_file(expiry: float | None, value: object) -> bytes:
    """A file as FileBasedCache._write_content makes it."""
    protocol = pickle.HIGHEST_PROTOCOL
    return pickle.dumps(expiry, protocol) + zlib.compress(pickle.dumps(value, protocol))


async def test_reads_back_what_django_pickled(tmp_path: Path) -> None:
    # MAX_ENTRIES above the count: Django culls at 300 files by default.
    location = str(tmp_path / "cache")
    caches = {
        "default": {"BACKEND": FILE_BACKEND, "LOCATION": location, "OPTIONS": {"MAX_ENTRIES": 5000}}
    }
    written = write_values(caches, count=1000)
    assert len(list((tmp_path / "cache").glob("*.djcache"))) == 1001

    found = await reader_for(tmp_path / "cache").get_many([*written, ":1:never-written"])

    # Django pickles every value in the file cache, the str too.
    expected = {
        key: bytes.fromhex(data)
        if kind == "pickle"
        else pickle.dumps(bytes.fromhex(data).decode(), pickle.HIGHEST_PROTOCOL)
        for key, (kind, data) in written.items()
    }
    assert found == expected


async def test_expired_and_missing_entries_are_absent_and_left_alone(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    caches = {"default": {"BACKEND": FILE_BACKEND, "LOCATION": str(directory)}}
    made = django_cache_run(
        caches,
        """
cache.set("live", ["a"], 60)
cache.set("forever", ["b"], None)
cache.set("gone", ["c"], 0)  # Django: set and expire (an expiry in the past)
result = [cache.make_key(k) for k in ("live", "forever", "gone")]
""",
    )
    live, forever, gone = made
    (directory / file_name(":1:empty")).write_bytes(b"")  # Django counts it expired

    found = await reader_for(directory).get_many([live, forever, gone, ":1:empty", ":1:none"])

    assert set(found) == {live, forever}
    assert pickle.loads(found[forever]) == ["b"]  # type: ignore[arg-type]
    assert (directory / file_name(gone)).exists()  # read-only: Django deletes, qwatch not


def test_expiry_header_is_parsed_strictly() -> None:
    for expiry in (None, 1.5, 1e9, 3, 300, 70000):
        for protocol in (2, 3, 4, 5):
            data = pickle.dumps(expiry, protocol) + b"rest"
            assert parse_expiry(data) == (expiry, len(data) - 4)
    hostile = [
        b"cos\nsystem\n(S'true'\ntR.",  # protocol 0: a call
        b"\x80\x04\x95\x17\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x93.",
        b"\x80\x05G\x00\x00",  # a float cut short
        b"\x80\x05N",  # no STOP
        b"\x80\x05]\x94.",  # a list
        b"\x80\x09N.",  # an unknown protocol
    ]
    for data in hostile:
        with pytest.raises(DecodeError, match="bad expiry header"):
            parse_expiry(data)


async def test_hostile_files_are_refused_one_by_one(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    outside = tmp_path / "outside.djcache"
    outside.write_bytes(cache_file(None, ["secret"]))
    later = time.time() + 600
    good = cache_file(later, ["django_q:site:cluster:1"])
    os_system = pickle.dumps(os.system, 4)  # names posix.system: never unpickled here
    files: dict[str, bytes] = {
        ":1:good": good,
        ":1:truncated": good[: len(good) - 5],
        ":1:hostile-expiry": os_system + zlib.compress(pickle.dumps(["x"])),
        ":1:bad-zlib": pickle.dumps(later) + b"not zlib",
        ":1:bomb": pickle.dumps(later) + zlib.compress(b"\x80" + b"\0" * MAX_VALUE_BYTES),
        ":1:huge": pickle.dumps(later) + os.urandom(MAX_VALUE_BYTES),
        ":1:not-a-pickle": pickle.dumps(later) + zlib.compress(b"plain text"),
    }
    for key, data in files.items():
        (directory / file_name(key)).write_bytes(data)
    (directory / file_name(":1:symlink")).symlink_to(outside)
    (directory / file_name(":1:dir-link")).symlink_to(tmp_path)
    os.mkfifo(directory / file_name(":1:fifo"))
    (directory / file_name(":1:subdir")).mkdir()

    found = await reader_for(directory).get_many(
        [*files, ":1:symlink", ":1:dir-link", ":1:fifo", ":1:subdir"]
    )

    assert found == {
        ":1:good": pickle.dumps(["django_q:site:cluster:1"], pickle.HIGHEST_PROTOCOL),
        ":1:truncated": Refused("bad zlib"),
        ":1:hostile-expiry": Refused("bad expiry header"),
        ":1:bad-zlib": Refused("bad zlib"),
        ":1:bomb": Refused("too large"),
        ":1:huge": Refused("too large"),
        ":1:not-a-pickle": Refused("not a pickle of protocol 2 or later"),
        ":1:symlink": Refused("a symlink, not followed"),
        ":1:dir-link": Refused("a symlink, not followed"),
        ":1:fifo": Refused("not a regular file"),
        ":1:subdir": Refused("not a regular file"),
    }


@pytest.mark.parametrize("how", ["missing", "a file"])
async def test_a_directory_that_cannot_be_read_is_one_line(tmp_path: Path, how: str) -> None:
    directory = tmp_path / "cache"
    if how == "a file":
        directory.write_text("")
    with pytest.raises(SourceUnavailable) as raised:
        await reader_for(directory).get_many([":1:a"])
    message = str(raised.value)
    assert message.startswith(f"file cache {directory}: ")
    assert "\n" not in message


async def test_version_and_close(tmp_path: Path) -> None:
    reader = reader_for(tmp_path)
    assert await reader.version() == "Django file cache"
    await reader.close()
    assert await reader.get_many([]) == {}
