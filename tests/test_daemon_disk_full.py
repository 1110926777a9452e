"""A SQLite history on a full disk (issue 13): the daemon buffers, says why, and once space
is freed catches up by itself without its WAL filling the disk again. A real 1 MiB
filesystem (tmpfs), a real Redis, a real daemon."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import CAPTURE_SITE, wait_for
from tests.plugins.qwatch_daemon import query
from tests.test_daemon import seed_captures, sites_config, stored

SIZE = "1m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB filesystem of the test's own, unmounted after it."""
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {SIZE} tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        # Lazily: a daemon killed by a failing test may still hold the history open.
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> None:
    """Write `path` until its filesystem has no space left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):  # down to the last byte
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    assert path.stat().st_size > 0


@pytest.mark.slow
def test_a_full_disk_recovers_once_space_is_freed(
    redis_server, daemon_factory, small_disk, tmp_path
):
    seed_captures(redis_server)
    history = small_disk / "history.sqlite3"
    db = f"sqlite:///{history}"
    config = sites_config(tmp_path / "qwatch.toml", (CAPTURE_SITE, redis_server.url))
    daemon = daemon_factory(db_url=db, config=config, interval=0.25, sample_every=0.25)
    samples = "SELECT count(*) FROM samples"
    wait_for(lambda: query(db, samples)[0][0] >= 4, 20, "samples")

    filler = small_disk / "filler"
    fill(filler)
    daemon.wait_log("history database unavailable", 30)
    outage = next(line for line in daemon.log.splitlines() if "unavailable" in line)
    assert "database or disk is full" in outage, outage  # the database's own words
    time.sleep(3)  # a dozen polls buffered meanwhile

    filler.unlink()
    freed = datetime.now(UTC)
    daemon.wait_log("history database back", 20)
    outages = daemon.log.count("history database unavailable")
    # Long enough for a WAL left to grow to fill the freed space again (each commit adds
    # several 4 KiB pages): it must not.
    time.sleep(12)
    wal = history.with_name(history.name + "-wal")
    assert not wal.exists() or wal.stat().st_size < 512 * 1024, wal.stat().st_size
    assert daemon.log.count("history database unavailable") == outages, daemon.log[-3000:]
    ((newest,),) = query(db, "SELECT max(sampled_at) FROM samples")
    assert (datetime.now(UTC) - stored(newest)).total_seconds() < 3, (newest, daemon.log[-2000:])
    during = query(db, "SELECT count(*) FROM samples WHERE sampled_at < :at", at=freed)
    assert during[0][0] > 4  # the buffered polls were written too
    assert daemon.terminate() == 0
