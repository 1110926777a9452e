"""`qwatch check`'s I/O: one live read of every site and, when asked, the history's watch
marks; the judging is `qwatch.check.evaluate`. Failures become Nagios answers here, since
a probe must print its one line whatever happens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from qwatch import live
from qwatch.check import Status, Thresholds, Verdict, evaluate, unknown
from qwatch.config import Settings
from qwatch.errors import QwatchError, SourceUnavailable, one_line


async def watch_marks(settings: Settings, sites: Sequence[str]) -> dict[str, datetime | None]:
    """When a daemon last wrote a poll of each site (the one read of the history `check`
    makes). A missing or foreign database is NotReadable/SchemaError: reading never writes."""
    from qwatch.store import reads

    async with reads.reader(settings.database_url) as conn:
        return {site: await reads.watched_at(conn, site) for site in sites}


async def run(settings: Settings, limits: Thresholds) -> Verdict:
    try:
        polls = await live.read_all(settings)
    except SourceUnavailable as exc:
        return Verdict(Status.CRITICAL, f"QWATCH CRITICAL - {exc}")
    marks = None
    if limits.max_sample_age_s is not None:
        try:
            marks = await watch_marks(settings, [poll.site for poll in polls])
        except QwatchError as exc:
            return unknown(f"history: {exc}")
        except Exception as exc:  # a driver's error: the database is down or not qwatch's
            return unknown(f"history database unreadable: {one_line(exc)}")
    return evaluate(polls, limits, datetime.now(UTC), marks)
