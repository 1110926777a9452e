"""The backlog of every queue of a site, read the way its broker allows without side effects.

- Redis broker: LLEN of `django_q:<queue>:q` for every queue, pipelined (one round trip) on
  the connection the Stats are read on.
- ORM broker: the rows of `django_q_ormq` that Django Q's `ORM.queue_size()` counts, i.e.
  `key = <queue>` and `lock <= now` (a row pulled by a cluster has its lock pushed `retry`
  seconds ahead and is not waiting until then), and the oldest of them, read through a
  read-only engine. The read runs in the background at most every ORM_REFRESH_S, so a slow
  database never delays the Stats; a value is served until it is ORM_STALE_S old, then the
  length becomes unknown with the reason, never a stale number passed off as fresh.
- Any other broker (SQS, MongoDB, IronMQ, a custom class): only a call that receives or
  peeks at messages could count them, so the length is None with the reason, never a zero.

`BacklogReader(site).read(connection)` is the one entry point; every StatSource calls it
(RedisSource with its connection, a cache-backed source with None).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from qwatch.config import Site, sqlite_path
from qwatch.errors import ConfigError
from qwatch.values import Backlog

if TYPE_CHECKING:  # SQLAlchemy is imported on use: a Redis site's `qwatch status` needs none
    from sqlalchemy.ext.asyncio import AsyncEngine

ORM_REFRESH_S = 5.0  # read the ORM queue at most this often
ORM_STALE_S = 15.0  # past this age a read is not shown as the backlog
ORM_FIRST_WAIT_S = 3.0  # a one-shot `qwatch status` waits this long for the first read
WRONG_TYPE = "broker key holds something other than a list"

# `key` and `lock` are quoted: both are keywords somewhere. No index covers `key`, so one
# grouped scan answers every queue at once.
_DUE_SQL = (
    'SELECT "key", count(*), min("lock") FROM django_q_ormq WHERE "lock" <= :now GROUP BY "key"'
)


class Caller(Protocol):
    """What the Redis read needs of a connection (qwatch.sources.redis.Connection)."""

    async def call(self, command: str, *args: bytes | str | int) -> Any: ...


def redis_list_key(queue: str) -> str:
    """Django Q's Redis broker list for a queue (brokers.redis_broker: django_q:<name>:q)."""
    return f"django_q:{queue}:q"


def unreadable(broker: str) -> str:
    return f"the {broker} broker's backlog cannot be read without side effects"


async def redis_backlogs(connection: Caller, queues: Sequence[str]) -> tuple[Backlog, ...]:
    """LLEN of every queue's list in one round trip.

    The commands are issued together: the protocol writes each before awaiting any reply,
    so they leave in one write. A key of another type names that queue's reason; a lost
    connection raises as any other command would.
    """
    replies: list[Any]
    if len(queues) == 1:  # one command: the tasks gather makes would only cost (~20 µs)
        try:
            replies = [await connection.call("LLEN", redis_list_key(queues[0]))]
        except Exception as exc:
            replies = [exc]
    else:
        replies = await asyncio.gather(
            *(connection.call("LLEN", redis_list_key(q)) for q in queues), return_exceptions=True
        )
    out = []
    for queue, reply in zip(queues, replies, strict=True):
        if isinstance(reply, BaseException):
            if getattr(reply, "code", None) != "WRONGTYPE":
                raise reply
            out.append(Backlog(queue, "redis", None, reason=WRONG_TYPE))
        else:
            out.append(Backlog(queue, "redis", int(reply)))
    return tuple(out)


def _as_utc(value: object) -> datetime | None:
    """min(lock) as an aware UTC time: PostgreSQL gives a datetime, SQLite Django's text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    # Django stores naive UTC in SQLite when USE_TZ is on (its default since 5.0).
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class OrmCount:
    length: int
    oldest_due: datetime | None  # when the oldest waiting row became due (enqueued or unlocked)


async def orm_due(engine: AsyncEngine, now: datetime) -> dict[str, OrmCount]:
    """Waiting rows per queue name, as ORM.queue_size() counts them at `now` (lock <= now)."""
    sqlite = engine.dialect.name == "sqlite"
    # Django's SQLite text is 'YYYY-MM-DD HH:MM:SS[.ffffff]' in UTC: compare like with like.
    bound: object = now.astimezone(UTC).replace(tzinfo=None).isoformat(" ") if sqlite else now
    if sqlite and now.microsecond == 0:
        bound = f"{bound}.000000"
    from sqlalchemy import text

    async with engine.connect() as connection:
        rows = (await connection.execute(text(_DUE_SQL), {"now": bound})).all()
    return {str(key): OrmCount(int(n), _as_utc(oldest)) for key, n, oldest in rows}


def orm_backlogs(
    queues: Sequence[str], counts: dict[str, OrmCount], now: datetime
) -> tuple[Backlog, ...]:
    """Backlogs of `queues` from one read; a queue with no row waiting is 0, age None."""
    out = []
    for queue in queues:
        count = counts.get(queue)
        if count is None:
            out.append(Backlog(queue, "orm", 0))
            continue
        age = None
        if count.oldest_due is not None:
            age = max(0.0, (now - count.oldest_due).total_seconds())
        out.append(Backlog(queue, "orm", count.length, age))
    return tuple(out)


def _describe(exc: BaseException) -> str:
    """A database failure in one line, without the URL (it may hold the password)."""
    inner = getattr(exc, "orig", None) or exc
    text_ = " ".join(str(inner).split()) or type(inner).__name__
    return text_[:200]


@dataclass(frozen=True, slots=True)
class _Read:
    at: float  # monotonic time of the read
    at_utc: datetime
    counts: dict[str, OrmCount] | None
    error: str = ""


class _OrmReader:
    """The ORM backlog, refreshed in the background; read() never waits on the database
    except for the very first value (bounded by ORM_FIRST_WAIT_S)."""

    def __init__(
        self,
        url: str,
        queues: Sequence[str],
        *,
        engine_factory: Callable[[str], AsyncEngine],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._queues = tuple(queues)
        self._engine_factory = engine_factory
        self._engine: AsyncEngine | None = None
        self._clock = clock
        self._last: _Read | None = None
        self._task: asyncio.Task[None] | None = None
        self._started_at = 0.0

    async def _refresh(self) -> None:
        now_utc = datetime.now(UTC)
        try:
            # aiosqlite leaves its thread running when the file will not open: ask first.
            path = sqlite_path(self._url)
            if path is not None and not path.expanduser().is_file():
                raise FileNotFoundError(f"no SQLite database at {path}")
            if self._engine is None:
                self._engine = self._engine_factory(self._url)
            counts = await orm_due(self._engine, now_utc)
            self._last = _Read(self._clock(), now_utc, counts)
        except ConfigError as exc:
            self._last = _Read(self._clock(), now_utc, None, str(exc))
        except Exception as exc:  # any driver error: the Stats must still show
            self._last = _Read(self._clock(), now_utc, None, _describe(exc))

    def _start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._started_at = self._clock()
            self._task = asyncio.create_task(self._refresh())
        return self._task

    async def read(self) -> tuple[Backlog, ...]:
        now = self._clock()
        last = self._last
        if last is None or now - last.at >= ORM_REFRESH_S:
            task = self._start()
            if last is None:
                # shield: a timeout must not cancel the read the next poll will use
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), ORM_FIRST_WAIT_S)
                last = self._last
        if last is None:
            return self._unknown(f"ORM database did not answer within {ORM_FIRST_WAIT_S:g} s")
        if last.counts is None:
            return self._unknown(f"ORM database: {last.error}")
        age = self._clock() - last.at
        if age > ORM_STALE_S:
            return self._unknown(f"ORM database slow: last read {age:.0f} s ago")
        # Ages grow while the value is served, so they stay true between reads.
        return orm_backlogs(self._queues, last.counts, datetime.now(UTC))

    def _unknown(self, reason: str) -> tuple[Backlog, ...]:
        return tuple(Backlog(q, "orm", None, reason=reason) for q in self._queues)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()


def _default_engine(url: str) -> AsyncEngine:
    from qwatch.store.engine import create_read_only_engine  # SQLAlchemy drivers: on use

    return create_read_only_engine(url)


class BacklogReader:
    """Every queue of a site (`site.queues`: the main cluster's, then each ALT_CLUSTERS one)
    as Backlogs, in that order."""

    def __init__(
        self,
        site: Site,
        *,
        engine_factory: Callable[[str], AsyncEngine] = _default_engine,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.site = site
        self.queues = site.queues
        self._orm: _OrmReader | None = None
        if site.broker == "orm" and site.broker_database:
            self._orm = _OrmReader(
                site.broker_database, self.queues, engine_factory=engine_factory, clock=clock
            )

    async def read(self, redis_connection: Caller | None) -> tuple[Backlog, ...]:
        broker = self.site.broker
        if broker == "redis":
            if redis_connection is None:
                return self._unknown("redis", "no Redis connection to the broker")
            return await redis_backlogs(redis_connection, self.queues)
        if broker == "orm":
            if self._orm is None:
                return self._unknown("orm", "the ORM broker's database is not configured")
            return await self._orm.read()
        return self._unknown(broker, unreadable(broker))

    def _unknown(self, broker: str, reason: str) -> tuple[Backlog, ...]:
        return tuple(Backlog(q, broker, None, reason=reason) for q in self.queues)

    async def close(self) -> None:
        if self._orm is not None:
            await self._orm.close()


__all__ = [
    "ORM_REFRESH_S",
    "ORM_STALE_S",
    "BacklogReader",
    "Caller",
    "OrmCount",
    "orm_backlogs",
    "orm_due",
    "redis_backlogs",
    "redis_list_key",
]
