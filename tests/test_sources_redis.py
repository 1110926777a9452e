"""RedisSource against real redis-server processes, seeded with real Django Q records."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Hashable, Iterator
from datetime import UTC, datetime

import pytest

from qwatch.config import RedisSettings, Site
from qwatch.decode import DecodeMemo, Decoder
from qwatch.sources.backlog import WRONG_TYPE
from qwatch.sources.redis import RedisSource, RedisUnavailable
from qwatch.values import Backlog, ClusterStat, Poll, Skipped
from tests.helpers import CAPTURE_ROTATED_SECRET, EXPECTED, PAYLOADS, free_port, wait_for_async
from tests.helpers import CAPTURE_SECRET as SECRET
from tests.helpers import CAPTURE_SITE as NAME
from tests.plugins.redis_server import RedisServer, RedisServerFactory, TLSFiles, redis_client

ROTATED = CAPTURE_ROTATED_SECRET
PASSWORD = "s3cret-Pa55word"

# The latest capture of each cluster: one record per key, as a live Redis would hold them.
LIVE = (
    "q094_dict_tz_working.txt",
    "q139_sha1_idle.txt",
    "q139_url_tz_working.txt",
    "q2_die_idle_reinc2.txt",
    "q2_rotatedB_idle.txt",
    "q2_url_notz_idle.txt",
    "q2_url_tz_stopping.txt",
)
CACHED = "q2_ormcache_idle.bin"


def payload(name: str) -> bytes:
    raw = (PAYLOADS / name).read_bytes()
    # A .txt capture is saved as a text line; the value in Redis had no line break.
    return raw.rstrip(b"\n") if name.endswith(".txt") else raw


def key_of(name: str) -> str:
    # The .bin entry notes its db after the key: ":1:django_q:… (redis db 1)".
    return str(EXPECTED[name]["redis_key"]).split(" ")[0]


def seed(server: RedisServer, names: tuple[str, ...] = LIVE, db: int = 0) -> None:
    with redis_client(server, db=db) as client:
        for name in names:
            client.set(key_of(name), payload(name), ex=30)


def make_site(server: RedisServer | None = None, **site_options: object) -> Site:
    """The capture site (its rotated key a fallback), on `server` or on `redis=`."""
    redis = site_options.pop("redis", None) or (server.settings() if server else None)
    assert redis is not None, "a site needs a server or redis settings"
    options: dict[str, object] = {
        "name": NAME,
        "secret_key": SECRET,
        "secret_key_fallbacks": (ROTATED,),
        "redis": redis,
    }
    options.update(site_options)
    return Site(**options)  # type: ignore[arg-type]


@pytest.fixture
async def source(redis_server: RedisServer) -> AsyncIterator[RedisSource]:
    async with RedisSource(make_site(redis_server)) as opened:
        yield opened


def assert_matches(stat: ClusterStat, name: str) -> None:
    expected = EXPECTED[name]
    assert stat.name == NAME
    assert stat.cluster_id == expected["cluster_id"]
    assert stat.host == expected["host"]
    assert stat.pid == expected["pid"]
    assert stat.workers == tuple(expected["workers"])  # type: ignore[arg-type]
    assert stat.status == expected["status"]
    assert stat.reincarnations == expected["reincarnations"]
    assert stat.task_q_size == expected["task_q_size"]
    # USE_TZ=False writers record naive local time: its offset is the site's TIME_ZONE, so
    # only the aware captures pin an instant.
    if str(expected["tob"]).endswith("+00:00"):
        assert stat.tob == datetime.fromisoformat(str(expected["tob"]))
        assert stat.timestamp == datetime.fromisoformat(str(expected["timestamp"]))


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A port whose kernel completes the TCP handshake but where nothing ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # never accept(): connections sit in the backlog, silent
        yield listener


# -- reading records


async def test_poll_decodes_every_live_cluster_sorted(
    redis_server: RedisServer, source: RedisSource
) -> None:
    seed(redis_server)

    poll = await source.poll()

    assert isinstance(poll, Poll)
    assert poll.site == NAME
    assert poll.skipped == ()
    assert len(poll.clusters) == len(LIVE)
    by_id = {stat.cluster_id: stat for stat in poll.clusters}
    for name in LIVE:
        assert_matches(by_id[str(EXPECTED[name]["cluster_id"])], name)
    assert list(poll.clusters) == sorted(poll.clusters, key=lambda c: (c.host, c.cluster_id))
    assert poll.at.tzinfo is not None
    assert abs((datetime.now(UTC) - poll.at).total_seconds()) < 5


async def test_poll_reads_cache_wrapped_records_in_their_db(redis_server: RedisServer) -> None:
    seed(redis_server)  # db 0: not this site's db, must not show
    seed(redis_server, (CACHED,), db=1)
    with redis_client(redis_server, db=1) as client:
        # Django's cache index of record keys; the pattern's trailing ':' keeps it out.
        client.set(f":1:django_q:{NAME}:cluster", b"\x80\x05]\x94.")
        client.set(key_of("q2_url_tz_idle.txt"), payload("q2_url_tz_idle.txt"))  # no prefix

    site = make_site(redis_server, cache_prefix=":1:", redis=redis_server.settings(db=1))
    async with RedisSource(site) as source:
        poll = await source.poll()

    assert [stat.cluster_id for stat in poll.clusters] == [EXPECTED[CACHED]["cluster_id"]]
    assert_matches(poll.clusters[0], CACHED)
    assert poll.skipped == ()


async def test_poll_skips_untrusted_records_with_reasons(redis_server: RedisServer) -> None:
    idle = "q2_url_tz_idle.txt"
    other_id = "00000000-0000-4000-8000-000000000000"
    prefix = f"django_q:{NAME}:cluster:"
    with redis_client(redis_server) as client:
        client.set(key_of(idle), payload(idle))
        client.set(prefix + "garbage", b"not a signed record")
        client.set(prefix + "truncated", payload(idle)[:40])
        client.set(prefix + other_id, payload(idle))  # a copy filed under another id
        client.set(key_of("q2_rotatedB_idle.txt"), payload("q2_rotatedB_idle.txt"))
        client.hset(prefix + "a-hash", "field", "value")  # MGET reads it as nil: just absent

    # Without the rotated key among its keys, the site cannot verify that record.
    site = make_site(redis_server, secret_key_fallbacks=())
    async with RedisSource(site) as source:
        poll = await source.poll()

    assert [stat.cluster_id for stat in poll.clusters] == [EXPECTED[idle]["cluster_id"]]
    reasons = {skip.key: skip.reason for skip in poll.skipped}
    assert set(reasons) == {
        prefix + "garbage",
        prefix + "truncated",
        prefix + other_id,
        key_of("q2_rotatedB_idle.txt"),
    }
    assert all(isinstance(skip, Skipped) and skip.reason for skip in poll.skipped)
    assert reasons[prefix + other_id] == f"record is for cluster {EXPECTED[idle]['cluster_id']}"
    assert [skip.key for skip in poll.skipped] == sorted(reasons)
    for reason in reasons.values():
        assert SECRET not in reason and ROTATED not in reason


async def test_poll_counts_the_broker_backlog(redis_server: RedisServer) -> None:
    with redis_client(redis_server) as client:
        client.rpush(f"django_q:{NAME}:q", *[b"task"] * 7)
        client.rpush("django_q:orders:q", *[b"task"] * 3)

    async with RedisSource(make_site(redis_server)) as source:
        assert (await source.poll()).backlogs == (Backlog(NAME, "redis", 7),)
    # cluster_name names the broker list; the records keep Q_CLUSTER['name'].
    async with RedisSource(make_site(redis_server, cluster_name="orders")) as source:
        assert (await source.poll()).backlogs == (Backlog("orders", "redis", 3),)
    async with RedisSource(make_site(redis_server, cluster_name="idle")) as source:
        assert (await source.poll()).backlogs == (Backlog("idle", "redis", 0),)
    # Every queue of the site, main first, each its own list; an absent list is empty.
    site = make_site(redis_server, cluster_name="orders", alt_queues=(NAME, "idle"))
    async with RedisSource(site) as source:
        assert (await source.poll()).backlogs == (
            Backlog("orders", "redis", 3),
            Backlog(NAME, "redis", 7),
            Backlog("idle", "redis", 0),
        )


async def test_broker_key_of_the_wrong_type_is_skipped_not_fatal(
    redis_server: RedisServer, source: RedisSource
) -> None:
    seed(redis_server, ("q2_url_tz_idle.txt",))
    with redis_client(redis_server) as client:
        client.set(f"django_q:{NAME}:q", b"not a list")

    poll = await source.poll()

    assert len(poll.clusters) == 1
    assert [skip.key for skip in poll.skipped] == [f"django_q:{NAME}:q"]
    assert poll.backlogs == (Backlog(NAME, "redis", None, reason=WRONG_TYPE),)


async def test_poll_scans_thousands_of_keys_in_batches(
    redis_server: RedisServer, source: RedisSource
) -> None:
    """More keys than one SCAN COUNT and one MGET batch; nothing lost, nothing twice."""
    total = 2_500
    prefix = f"django_q:{NAME}:cluster:"
    with redis_client(redis_server) as client, client.pipeline(transaction=False) as pipe:
        for name in LIVE:
            pipe.set(key_of(name), payload(name), ex=30)
        for n in range(total - len(LIVE)):
            if n % 10 == 0:
                pipe.set(f"{prefix}junk-{n}", b"junk", ex=30)
            else:
                pipe.set(f"{prefix}copy-{n}", payload(LIVE[n % len(LIVE)]), ex=30)
        for n in range(1_000):  # another site's records share the keyspace
            pipe.set(f"django_q:othersite:cluster:{n}", b"x", ex=30)
        pipe.execute()

    poll = await source.poll()

    assert len(poll.clusters) == len(LIVE)
    assert len(poll.skipped) == total - len(LIVE)
    assert len({skip.key for skip in poll.skipped}) == len(poll.skipped)
    assert all(skip.key.startswith(prefix) for skip in poll.skipped)


class CountingDecoder:
    def __init__(self) -> None:
        self.inner = Decoder(NAME, SECRET, (ROTATED,), "UTC")
        self.calls = 0
        self.keys: list[Hashable] = []  # the key of each call that carried the memo

    def decode(
        self, raw: bytes | str, memo: DecodeMemo | None = None, key: Hashable = None
    ) -> ClusterStat:
        self.calls += 1
        if memo is not None:
            self.keys.append(key)
        return self.inner.decode(raw, memo, key)


async def test_unchanged_records_are_not_decoded_again(redis_server: RedisServer) -> None:
    seed(redis_server)
    with redis_client(redis_server) as client:
        for n in range(20):  # the same bytes under many keys: decoded once per poll
            client.set(f"django_q:{NAME}:cluster:copy-{n}", payload(LIVE[0]))
    decoder = CountingDecoder()
    async with RedisSource(make_site(redis_server), decoder=decoder) as source:  # type: ignore[arg-type]
        first = await source.poll()
        assert decoder.calls == len(LIVE)

        second = await source.poll()
        assert decoder.calls == len(LIVE)
        assert second.clusters == first.clusters
        assert second.skipped == first.skipped

        seed(redis_server, ("q2_url_tz_idle.txt",))  # replaces the stopping record
        third = await source.poll()
        assert decoder.calls == len(LIVE) + 1
        assert "Idle" in {stat.status for stat in third.clusters}
        # Every record went with its key, for the decoder's per-key memo.
        assert len(decoder.keys) == decoder.calls
        assert key_of("q2_url_tz_idle.txt").encode() == decoder.keys[-1]


async def test_glob_characters_in_a_site_name_match_only_themselves(
    redis_server: RedisServer,
) -> None:
    seed(redis_server)
    async with RedisSource(make_site(redis_server, name="re*")) as source:
        poll = await source.poll()
    assert poll.clusters == ()
    assert poll.skipped == ()


async def test_server_version(redis_server: RedisServer, source: RedisSource) -> None:
    with redis_client(redis_server) as client:
        expected = client.info("server")["redis_version"]
    assert await source.server_version() == expected


# -- authentication


async def test_password_auth(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory(password=PASSWORD)
    seed(server)
    async with RedisSource(make_site(server)) as source:
        assert len((await source.poll()).clusters) == len(LIVE)


async def test_acl_user_auth(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory(
        password=PASSWORD,
        users=["alice on >wonderland ~django_q:* +@all", "bob on >builder ~other:* +@all"],
    )
    seed(server)
    alice = server.settings(username="alice", password="wonderland")
    async with RedisSource(make_site(server, redis=alice)) as source:
        assert len((await source.poll()).clusters) == len(LIVE)

    # bob authenticates, but his ACL keeps him from reading the records: a refusal, not a crash.
    bob = server.settings(username="bob", password="builder")
    async with RedisSource(make_site(server, redis=bob)) as source:
        with pytest.raises(RedisUnavailable, match="NOPERM"):
            await source.poll()


@pytest.mark.parametrize(
    ("username", "password"),
    [(None, "wrong-password-123"), ("alice", "wrong-password-123"), ("nobody", PASSWORD)],
)
async def test_failed_auth_names_the_address_never_the_password(
    redis_server_factory: RedisServerFactory, username: str | None, password: str
) -> None:
    server = redis_server_factory(password=PASSWORD, users=["alice on >wonderland ~* +@all"])
    settings = server.settings(username=username, password=password)

    async with RedisSource(make_site(server, redis=settings)) as source:
        with pytest.raises(RedisUnavailable) as caught:
            await source.poll()

    message = str(caught.value)
    assert "authentication failed" in message
    assert settings.address in message
    assert password not in message and PASSWORD not in message
    assert "\n" not in message


async def test_missing_password_is_reported(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory(password=PASSWORD)
    settings = server.settings(password=None)
    async with RedisSource(make_site(server, redis=settings)) as source:
        with pytest.raises(RedisUnavailable, match="authentication required") as caught:
            await source.poll()
    assert settings.address in str(caught.value)


async def test_bad_db_is_reported(redis_server: RedisServer) -> None:
    settings = redis_server.settings(db=99)
    async with RedisSource(make_site(redis_server, redis=settings)) as source:
        with pytest.raises(RedisUnavailable, match="cannot select db 99"):
            await source.poll()


# -- failures: refused, silent, garbage, outage


async def test_refused_port_fails_fast() -> None:
    port = free_port()  # free a moment ago, and no listener
    settings = RedisSettings(host="127.0.0.1", port=port, password=PASSWORD)

    started = time.monotonic()
    async with RedisSource(make_site(redis=settings)) as source:
        with pytest.raises(RedisUnavailable, match="connection refused") as caught:
            await source.poll()

    assert time.monotonic() - started < 1.0
    assert settings.address in str(caught.value)
    assert PASSWORD not in str(caught.value)


async def test_server_that_never_answers_times_out(silent_server: socket.socket) -> None:
    port = silent_server.getsockname()[1]
    settings = RedisSettings(host="127.0.0.1", port=port, command_timeout=0.3)

    started = time.monotonic()
    async with RedisSource(make_site(redis=settings)) as source:
        with pytest.raises(RedisUnavailable, match=r"timed out after 0\.3s") as caught:
            await source.poll()

    assert 0.3 <= time.monotonic() - started < 2.0
    assert settings.address in str(caught.value)


async def test_silent_tls_handshake_times_out_on_connect(
    silent_server: socket.socket, tls_files: TLSFiles
) -> None:
    port = silent_server.getsockname()[1]
    settings = RedisSettings(
        host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(tls_files.ca), connect_timeout=0.3
    )

    started = time.monotonic()
    async with RedisSource(make_site(redis=settings)) as source:
        with pytest.raises(RedisUnavailable, match=r"timed out after 0\.3s"):
            await source.poll()
    assert time.monotonic() - started < 2.0


async def test_a_server_speaking_something_else_is_a_protocol_error() -> None:
    async def answer_like_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(answer_like_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = RedisSettings(host="127.0.0.1", port=port)
    started = time.monotonic()
    try:
        async with RedisSource(make_site(redis=settings)) as source:
            with pytest.raises(RedisUnavailable, match="protocol error"):
                await source.poll()
    finally:
        server.close()
        await server.wait_closed()
    assert time.monotonic() - started < 2.0  # not the 5 s command timeout


async def test_outage_then_recovery_on_the_same_port(
    redis_server: RedisServer, source: RedisSource
) -> None:
    seed(redis_server)
    assert len((await source.poll()).clusters) == len(LIVE)

    redis_server.kill()
    # Lost mid-command, or refused if the close was noticed before the next poll began.
    with pytest.raises(RedisUnavailable, match=r"connection lost|connection refused"):
        await source.poll()
    with pytest.raises(RedisUnavailable, match="connection refused"):
        await source.poll()

    redis_server.start()  # same port, empty: nothing is saved
    assert (await source.poll()).clusters == ()
    seed(redis_server, ("q2_url_tz_idle.txt",))
    assert len((await source.poll()).clusters) == 1


async def test_concurrent_calls_share_one_connection(
    redis_server: RedisServer, source: RedisSource
) -> None:
    seed(redis_server)
    polls = await asyncio.gather(
        *(source.poll() for _ in range(5)), source.acquire_lock("qwatch:lock", "me", 5)
    )
    assert polls[-1] is True
    assert all(len(poll.clusters) == len(LIVE) for poll in polls[:-1])
    with redis_client(redis_server) as client:
        assert client.info("clients")["connected_clients"] == 2  # ours and this one


async def test_close_is_idempotent_and_poll_reconnects(
    redis_server: RedisServer, source: RedisSource
) -> None:
    await source.poll()
    await source.close()
    await source.close()
    assert (await source.poll()).clusters == ()


# -- TLS and unix sockets


async def test_tls_with_the_ca_verified(tls_redis_server: RedisServer) -> None:
    seed(tls_redis_server)
    async with RedisSource(make_site(tls_redis_server)) as source:
        assert len((await source.poll()).clusters) == len(LIVE)
    by_name = tls_redis_server.settings(host="localhost")
    async with RedisSource(make_site(tls_redis_server, redis=by_name)) as source:
        assert len((await source.poll()).clusters) == len(LIVE)


async def test_tls_without_verification(tls_redis_server: RedisServer) -> None:
    settings = tls_redis_server.settings(ssl_ca_certs=None, ssl_verify=False)
    async with RedisSource(make_site(tls_redis_server, redis=settings)) as source:
        assert (await source.poll()).backlogs == (Backlog(NAME, "redis", 0),)


async def test_tls_rejects_a_certificate_it_cannot_verify(tls_redis_server: RedisServer) -> None:
    settings = tls_redis_server.settings(ssl_ca_certs=None)  # system CAs: ours is not among them
    async with RedisSource(make_site(tls_redis_server, redis=settings)) as source:
        with pytest.raises(RedisUnavailable, match="certificate verification failed") as caught:
            await source.poll()
    assert settings.address in str(caught.value)


async def test_tls_hostname_check_can_be_turned_off_alone(
    redis_server_factory: RedisServerFactory, tls_files: TLSFiles
) -> None:
    # 127.0.0.2 reaches the server but is not in its certificate.
    server = redis_server_factory(tls=tls_files, extra_args=["--bind", "127.0.0.1", "127.0.0.2"])
    elsewhere = server.settings(host="127.0.0.2")
    async with RedisSource(make_site(server, redis=elsewhere)) as source:
        with pytest.raises(RedisUnavailable, match="certificate verification failed"):
            await source.poll()

    unchecked = server.settings(host="127.0.0.2", ssl_check_hostname=False)
    async with RedisSource(make_site(server, redis=unchecked)) as source:
        assert (await source.poll()).clusters == ()


async def test_tls_files_that_will_not_load_are_named(tls_redis_server: RedisServer) -> None:
    settings = tls_redis_server.settings(ssl_ca_certs="/nonexistent/ca.pem")
    async with RedisSource(make_site(tls_redis_server, redis=settings)) as source:
        with pytest.raises(
            RedisUnavailable, match=r"cannot load ssl_ca_certs /nonexistent/ca\.pem"
        ):
            await source.poll()


async def test_tls_with_a_client_certificate(
    redis_server_factory: RedisServerFactory, tls_files: TLSFiles
) -> None:
    server = redis_server_factory(tls=tls_files, tls_auth_clients=True)
    seed(server)
    async with RedisSource(make_site(server)) as source:
        assert len((await source.poll()).clusters) == len(LIVE)

    anonymous = server.settings(ssl_certfile=None, ssl_keyfile=None)
    async with RedisSource(make_site(server, redis=anonymous)) as source:
        with pytest.raises(RedisUnavailable):
            await source.poll()


async def test_unix_socket(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory(unix_socket=True, password=PASSWORD)
    seed(server)
    settings = RedisSettings(unix_socket_path=server.unix_socket_path, password=PASSWORD)
    async with RedisSource(make_site(server, redis=settings)) as source:
        assert len((await source.poll()).clusters) == len(LIVE)

    missing = RedisSettings(unix_socket_path=f"{server.unix_socket_path}.missing")
    async with RedisSource(make_site(server, redis=missing)) as source:
        with pytest.raises(RedisUnavailable, match="no such socket"):
            await source.poll()


# -- the daemon lock


async def test_lock_is_held_by_one_source_at_a_time(redis_server: RedisServer) -> None:
    key = "qwatch:lock:researchq"
    async with (
        RedisSource(make_site(redis_server)) as first,
        RedisSource(make_site(redis_server)) as second,
    ):
        assert await first.acquire_lock(key, "first", ttl_s=5)
        assert not await second.acquire_lock(key, "second", ttl_s=5)

        # Holding it already extends it.
        assert await first.acquire_lock(key, "first", ttl_s=60)
        with redis_client(redis_server) as client:
            assert client.pttl(key) > 5_000
            assert client.get(key) == b"first"

        # Releasing with someone else's token leaves it alone.
        await second.release_lock(key, "second")
        assert not await second.acquire_lock(key, "second", ttl_s=5)

        await first.release_lock(key, "first")
        assert await second.acquire_lock(key, "second", ttl_s=5)
        assert not await first.acquire_lock(key, "first", ttl_s=5)

        with redis_client(redis_server) as client:
            client.delete(key)  # as if it had expired: the other may take it
        assert await first.acquire_lock(key, "first", ttl_s=0.5)
        with redis_client(redis_server) as client:
            assert 0 < client.pttl(key) <= 500


async def test_lock_expires_by_itself(redis_server: RedisServer) -> None:
    key = "qwatch:lock:researchq"
    async with (
        RedisSource(make_site(redis_server)) as first,
        RedisSource(make_site(redis_server)) as second,
    ):
        assert await first.acquire_lock(key, "first", ttl_s=0.05)
        await wait_for_async(
            lambda: second.acquire_lock(key, "second", ttl_s=5), 5, "the lock to expire", 0.01
        )
        assert not await first.acquire_lock(key, "first", ttl_s=5)


async def test_lock_ttl_must_be_positive(source: RedisSource) -> None:
    with pytest.raises(ValueError, match="positive"):
        await source.acquire_lock("k", "t", ttl_s=0)


# -- URLs, as qwatch's settings parse them


async def test_sources_built_from_urls(
    redis_server_factory: RedisServerFactory, tls_files: TLSFiles
) -> None:
    plain = redis_server_factory(unix_socket=True)
    secured = redis_server_factory(password=PASSWORD)
    tls = redis_server_factory(tls=tls_files)
    for server in (plain, secured, tls):
        seed(server, (CACHED,), db=1)
    urls = [
        secured.url_for(db=1),
        f"unix://{plain.unix_socket_path}?db=1",
        tls.url_for(db=1),
        f"rediss://127.0.0.1:{tls.port}/1?ssl_cert_reqs=none",
    ]
    for url in urls:
        site = make_site(plain, redis=RedisSettings.from_url(url), cache_prefix=":1:")
        async with RedisSource(site) as source:
            assert len((await source.poll()).clusters) == 1, url
