"""`qwatch check`'s I/O: one live read of every site and, when asked, the history's watch
marks; the judging is `qwatch.check.evaluate`. Failures become Nagios answers here, since
a probe must print its one line whatever happens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from qwatch import live
from qwatch.check import Status, Thresholds, Verdict, evaluate, unknown
from qwatch.config import Settings
from qwatch.errors import QwatchError
from qwatch.sources.redis import RedisUnavailable


async def watch_marks(settings: Settings, sites: Sequence[str]) -> dict[str, datetime | None]:
    """When a daemon last wrote a poll of each site: the one read of the history `check`
    makes, kept behind this function so the store's read layer can change under it."""
    from qwatch.store.engine import create_engine
    from qwatch.store.reads import watched_at

    engine = create_engine(settings.database_url)
    try:
        return {site: await watched_at(engine, site) for site in sites}
    finally:
        await engine.dispose()


async def run(settings: Settings, limits: Thresholds) -> Verdict:
    try:
        polls = await live.read_all(settings)
    except RedisUnavailable as exc:
        return Verdict(Status.CRITICAL, f"QWATCH CRITICAL - {exc}")
    marks = None
    if limits.max_sample_age_s is not None:
        try:
            marks = await watch_marks(settings, [poll.site for poll in polls])
        except QwatchError as exc:
            return unknown(f"history: {exc}")
        except Exception as exc:  # a driver's error: the database is down or not qwatch's
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            return unknown(f"history database unreadable: {reason}")
    return evaluate(polls, limits, datetime.now(UTC), marks)
