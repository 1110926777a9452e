"""Discovery on a shared keyspace: the budget arithmetic, the known set, and RedisSource's
incremental path against real redis-server processes, compared with the full sweep."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from qwatch.config import RedisSettings
from qwatch.daemon import SiteLoop
from qwatch.events import Tracker
from qwatch.sources import discovery
from qwatch.sources.discovery import Discovery, ScanBudget
from qwatch.sources.notify import channel_for, keys_of
from qwatch.sources.redis import RedisSource, scan_usec
from qwatch.values import APPEARED, Poll
from tests.helpers import EXPECTED, cluster_stat, free_port, wait_for_async
from tests.plugins.redis_server import RedisServer, RedisServerFactory, redis_client
from tests.test_sources_redis import LIVE, key_of, make_site, payload

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FILLER = 100_000
# DEBUG POPULATE fills a keyspace in a blink; Redis 7 refuses DEBUG unless allowed.
DEBUG = ("--enable-debug-command", "yes")


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def cluster_id(name: str) -> str:
    return str(EXPECTED[name]["cluster_id"])


# -- pure: the budget and the known set


def test_the_budget_keeps_scan_within_its_share_whatever_a_call_costs() -> None:
    rng = random.Random(7)
    budget = ScanBudget(0.01)
    now, charged, calls = 0.0, 0.0, 0
    budget.earn(now)
    for _ in range(5_000):  # polls 0.2 to 2 s apart, calls costing 0.3 to 3 us per unit of COUNT
        now += rng.uniform(0.2, 2.0)
        budget.earn(now)
        while count := budget.next_count():
            assert discovery.MIN_COUNT <= count <= discovery.MAX_COUNT
            charged += budget.spent(count, count * rng.uniform(0.3e-6, 3e-6))
            calls += 1
    # At most one call's worth of debt beyond the share.
    assert charged <= 0.01 * now + discovery.MAX_COUNT * 3e-6
    assert charged >= 0.01 * now * 0.9  # and the share is used, not wasted
    assert calls > 1_000


def test_commandstats_tighten_the_charge_and_the_count() -> None:
    budget = ScanBudget(0.01)
    budget.earn(0.0)
    budget.earn(1.0)  # 10 ms of credit
    first = budget.next_count()
    assert first == discovery.MAX_COUNT  # 10 ms / 2 us is more than a call may carry
    # A slow network: 5 ms round trips, though Redis says SCAN took 1 ms for it all.
    assert budget.spent(first, 0.005) == pytest.approx(0.005)
    budget.stated(usec=1_000, count=first)
    assert budget.spent(first, 0.005) == pytest.approx(0.001)
    assert budget.credit_s == pytest.approx(0.004)
    budget.stated(usec=30_000, count=first)  # busy with others' SCANs: the round trip is less
    assert budget.spent(first, 0.02) == pytest.approx(0.02)
    assert budget.credit_s < 0
    assert budget.next_count() == 0  # the debt is repaid before the next call
    with pytest.raises(ValueError):
        ScanBudget(0)


class At(Discovery):
    """Reads at `now`, so the pure test stays short."""

    now = t(7)

    def read_at(self, keys: Sequence[bytes], values: Sequence[object]) -> dict[bytes, datetime]:
        return self.read(keys, values, self.now)


def test_known_keys_read_until_gone_and_late_keys_carry_the_previous_pass_start() -> None:
    found = At()
    found.swept([b"a", b"b"], t(0))
    assert found.read_at([b"a", b"b"], [b"x", b"y"]) == {}  # swept: not late
    found.scanned(b"17", [b"a", b"c"], t(5))
    found.noticed([b"d"])
    assert found.known == (b"a", b"b", b"c", b"d")
    # b has nothing under it any more: dropped. c and d were found after the sweep.
    assert found.read_at(found.known, [b"x", None, b"z", b"w"]) == {b"c": t(0), b"d": t(0)}
    assert found.known == (b"a", b"c", b"d")
    assert found.read_at(found.known, [b"x", b"z", b"w"]) == {}  # handed out once
    found.scanned(b"0", [], t(9))  # a pass ends at 9; the next starts there
    found.scanned(b"4", [b"e"], t(12))
    assert found.read_at([b"e"], [b"v"]) == {b"e": t(0)}  # it may predate the pass of 0 to 9
    found.scanned(b"0", [], t(20))
    found.scanned(b"5", [b"f"], t(21))
    assert found.read_at([b"f"], [b"v"]) == {b"f": t(9)}
    # A record that lapsed at 7 and is found again: not older than its lapse.
    found.scanned(b"6", [b"b"], t(22))
    assert found.read_at([b"b"], [b"v"]) == {b"b": t(9)}
    found.read_at([b"b"], [None])
    found.noticed([b"b"])
    assert found.read_at([b"b"], [b"v"]) == {b"b": t(9)}  # the drop at 7 predates 9
    found.scanned(b"0", [], t(30))  # since is 20 now
    found.now = t(25)
    found.read_at([b"f"], [None])
    found.noticed([b"f"])
    assert found.read_at([b"f"], [b"v"]) == {b"f": t(25)}
    found.reset()
    assert found.needs_sweep and found.cursor == b"0"


def test_notification_channels_follow_the_servers_flags() -> None:
    prefix = b"django_q:s:cluster:"
    assert channel_for("", 0, prefix, prefix) is None
    assert channel_for("Kg", 0, prefix, prefix) is None  # no string events
    assert channel_for("K$", 2, prefix, prefix) == (
        "PSUBSCRIBE",
        b"__keyspace@2__:django_q:s:cluster:*",
    )
    assert channel_for("AKE", 0, prefix, prefix) == (
        "PSUBSCRIBE",
        b"__keyspace@0__:" + prefix + b"*",
    )
    assert channel_for("E$", 0, prefix, prefix) == ("SUBSCRIBE", b"__keyevent@0__:set")
    space = b"__keyspace@0__:"
    key = prefix + b"abc"
    assert keys_of([b"pmessage", b"p", space + key, b"set"], prefix, space) == key
    assert keys_of([b"pmessage", b"p", space + key, b"expired"], prefix, space) is None
    assert keys_of([b"message", b"__keyevent@0__:set", key], prefix, space) == key
    assert keys_of([b"message", b"__keyevent@0__:set", b"other:key"], prefix, space) is None
    assert (
        scan_usec(b"# Commandstats\r\ncmdstat_scan:calls=3,usec=120,usec_per_call=40.00\r\n") == 120
    )
    assert scan_usec(b"# Commandstats\r\ncmdstat_get:calls=3,usec=120\r\n") is None


# -- against redis-server


@pytest.fixture
def shared(redis_server_factory: RedisServerFactory) -> RedisServer:
    """A Redis whose database holds 100 k other keys, as a shared cache's would."""
    server = redis_server_factory(extra_args=DEBUG)
    with redis_client(server) as client:
        client.execute_command("DEBUG", "POPULATE", FILLER)
    return server


def put(server: RedisServer, *names: str) -> None:
    with redis_client(server) as client:
        for name in names:
            client.set(key_of(name), payload(name), ex=60)


def scan_stats(server: RedisServer) -> tuple[int, int]:
    """(calls, usec) of SCAN so far, by INFO commandstats."""
    with redis_client(server) as client:
        stats = client.info("commandstats").get("cmdstat_scan", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def ids(poll_clusters: tuple[object, ...]) -> set[str]:
    return {stat.cluster_id for stat in poll_clusters}  # type: ignore[attr-defined]


@pytest.fixture
def rng() -> Iterator[random.Random]:
    yield random.Random(15)


async def test_a_new_record_is_found_within_one_pass_and_dated_from_the_sweep(
    shared: RedisServer,
) -> None:
    put(shared, *LIVE[:3])
    async with RedisSource(make_site(shared), scan_share=0.5) as source:
        first = await source.poll()
        assert ids(first.clusters) == {cluster_id(n) for n in LIVE[:3]}
        assert first.late == {}
        swept_at = first.at
        put(shared, LIVE[3])
        wraps, polls = 0, 0
        # A pass over 100 k keys is at most 100 calls of MIN_COUNT+: bounded, not luck.
        assert not source._discovery.needs_sweep  # so what finds it is the incremental SCAN
        while cluster_id(LIVE[3]) not in ids((poll := await source.poll()).clusters):
            polls += 1
            wraps += source._discovery.cursor == b"0"
            # SCAN returns every key there for a whole pass: this one, the first after the put.
            assert wraps == 0, "a whole pass went by without finding the new record"
            assert polls < 2_000
            await asyncio.sleep(0.01)  # lets the budget earn: a real wait, not for an event
        assert set(poll.late) == {cluster_id(LIVE[3])}
        assert poll.late[cluster_id(LIVE[3])] <= swept_at
        # (The very first poll after the put may find it: on a slow machine the budget
        # earned during the sweep can pay for the rest of the pass at once.)

        # Gone from Redis: gone from the very next poll, and no longer read.
        with redis_client(shared) as client:
            client.delete(key_of(LIVE[0]))
        after = await source.poll()
        assert cluster_id(LIVE[0]) not in ids(after.clusters)
        assert key_of(LIVE[0]).encode() not in source._discovery.known


async def test_a_standby_that_takes_the_site_over_sweeps_first(shared: RedisServer) -> None:
    # No SCAN budget to speak of: only a sweep can find a record written meanwhile.
    put(shared, *LIVE[:2])
    lock = "qwatch:test:lock"
    async with (
        RedisSource(make_site(shared), scan_share=1e-9) as sampler,
        RedisSource(make_site(shared), scan_share=1e-9) as standby,
    ):
        assert await sampler.acquire_lock(lock, "sampler", 30)
        assert not await standby.acquire_lock(lock, "standby", 30)
        await sampler.poll()
        await standby.poll()  # its sweep, before it stood by
        put(shared, LIVE[2])
        assert await sampler.acquire_lock(lock, "sampler", 30)  # extending: no new sweep
        assert cluster_id(LIVE[2]) not in ids((await sampler.poll()).clusters)
        await sampler.release_lock(lock, "sampler")
        assert await standby.acquire_lock(lock, "standby", 30)  # the takeover
        assert cluster_id(LIVE[2]) in ids((await standby.poll()).clusters)


async def test_polls_after_the_sweep_stay_within_the_scan_budget(shared: RedisServer) -> None:
    put(shared, *LIVE)
    share = 0.01
    async with RedisSource(make_site(shared), scan_share=share) as source:
        await source.poll()  # the sweep, not paid from the budget
        calls0, usec0 = scan_stats(shared)
        started = time.monotonic()
        for _ in range(40):
            poll = await source.poll()
            assert len(poll.clusters) == len(LIVE)  # known records read every poll
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        calls, usec = scan_stats(shared)
    # SCAN's own time on the server: the share of the wall time, and at most one call over.
    assert calls > calls0  # it did look for new keys
    assert usec - usec0 <= share * elapsed * 1e6 + discovery.MAX_COUNT * 2


async def test_the_incremental_path_reports_what_a_full_scan_does(
    shared: RedisServer, rng: random.Random
) -> None:
    """After changes and one complete pass, the same clusters and skips as a fresh sweep."""
    prefix = f"django_q:{make_site(shared).name}:cluster:"
    put(shared, *LIVE[:2])
    async with RedisSource(make_site(shared), scan_share=1.0) as source:
        await source.poll()
        for round_ in range(3):
            with redis_client(shared) as client:
                for name in LIVE:
                    if rng.random() < 0.5:
                        client.set(key_of(name), payload(name), ex=60)
                    else:
                        client.delete(key_of(name))
                client.set(f"{prefix}junk-{round_}", b"not a record", ex=60)
                client.set(f"django_q:other:cluster:{round_}", b"another site's", ex=60)
            wraps = 0
            while wraps < 2:  # the pass under way, then a whole one after the changes
                incremental = await source.poll()
                wraps += source._discovery.cursor == b"0"
                await asyncio.sleep(0.005)
            async with RedisSource(make_site(shared)) as fresh:
                full = await fresh.poll()
            assert incremental.clusters == full.clusters
            assert incremental.skipped == full.skipped


async def test_keyspace_notifications_find_a_record_at_once_when_enabled(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory(extra_args=(*DEBUG, "--notify-keyspace-events", "K$"))
    with redis_client(server) as client:
        client.execute_command("DEBUG", "POPULATE", FILLER)
    # A share so small the SCAN would take days: whatever is found, the notifications found.
    async with RedisSource(make_site(server), scan_share=1e-9) as source:
        await source.poll()  # the sweep: a one-shot read never subscribes
        assert source.notifications is None
        await source.poll()
        assert source.notifications == f"__keyspace@0__:django_q:{make_site(server).name}:cluster:*"
        with redis_client(server) as client:
            assert client.execute_command("PUBSUB", "NUMPAT") == 1
        put(server, LIVE[0])

        async def found() -> bool:
            return cluster_id(LIVE[0]) in ids((await source.poll()).clusters)

        await wait_for_async(found, 5.0, "the notified record to be read")
    with redis_client(server) as client:  # closed with the source
        await wait_for_async(
            lambda: client.execute_command("PUBSUB", "NUMPAT") == 0, 5.0, "unsubscribed"
        )


async def test_keyevent_notifications_are_filtered_to_the_site(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory(extra_args=("--notify-keyspace-events", "E$"))
    async with RedisSource(make_site(server), scan_share=1e-9) as source:
        await source.poll()
        await source.poll()
        assert source.notifications == "__keyevent@0__:set"
        with redis_client(server) as client:
            client.set("someone:else", b"x")
        put(server, LIVE[1])

        async def found() -> bool:
            return cluster_id(LIVE[1]) in ids((await source.poll()).clusters)

        await wait_for_async(found, 5.0, "the notified record to be read")
        assert b"someone:else" not in source._discovery.known


async def test_no_notifications_when_the_server_sends_none(shared: RedisServer) -> None:
    async with RedisSource(make_site(shared), scan_share=1e-9) as source:
        await source.poll()
        for _ in range(3):
            await source.poll()
        assert source.notifications is None
        with redis_client(shared) as client:
            assert client.execute_command("PUBSUB", "NUMPAT") == 0
            assert client.execute_command("PUBSUB", "CHANNELS") == []
            assert client.config_get("notify-keyspace-events") == {"notify-keyspace-events": ""}


def test_the_daemon_dates_a_late_found_run_by_its_birth() -> None:
    """Poll.late through SiteLoop: the batch's appeared events (whose time the store keeps
    as the run's first_seen, tests/test_store.py). No I/O: the source is never polled."""
    site = make_site(redis=RedisSettings(host="127.0.0.1", port=free_port()))
    loop = SiteLoop(site, RedisSource(site), "lock", "token", 1.0, 10.0, tracker=Tracker(site.name))
    born = datetime.now(UTC) - timedelta(seconds=30)
    late = cluster_stat("late-one", name=site.name, tob=born, timestamp=born)
    plain = cluster_stat("plain-one", name=site.name, host="other", tob=born, timestamp=born)
    at = datetime.now(UTC)

    batch = loop._batch(
        Poll(site.name, at, (late, plain), late={"late-one": born - timedelta(seconds=60)})
    )

    assert batch is not None
    appeared = {e.cluster_id: e.at for e in batch.events if e.kind == APPEARED}
    assert appeared == {"late-one": born, "plain-one": at}
    assert {s.cluster_id for s in batch.seen} == {"late-one", "plain-one"}
