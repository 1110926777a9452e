"""`qwatch status`: one read of every configured site, as a table or JSON (its times in UTC).

The table shows no time of day, only uptimes, so `--tz` changes nothing here yet; it is
accepted like on every command that prints times.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from qwatch import output
from qwatch.config import Settings
from qwatch.decode import Decoder
from qwatch.fmt import hms, iso
from qwatch.sources import open_source
from qwatch.values import Backlog, ClusterStat, Poll

COLUMNS = ("Host", "Id", "State", "Pool", "TQ", "RQ", "RC", "Up")


async def read_all(settings: Settings) -> list[Poll]:
    """One poll per site, concurrently; the first unreachable source raises SourceUnavailable."""
    # A decoder that remembers nothing: this read is the only one (Decoder's remember).
    sources = [
        open_source(
            site,
            Decoder(
                site.name,
                site.secret_key,
                site.secret_key_fallbacks,
                site.time_zone,
                remember=False,
            ),
        )
        for site in settings.sites
    ]
    try:
        return list(await asyncio.gather(*(source.poll() for source in sources)))
    finally:
        await asyncio.gather(*(source.close() for source in sources), return_exceptions=True)


UNKNOWN_QUEUE = "unknown"


def cluster_json(stat: ClusterStat) -> dict[str, object]:
    """One cluster of `status --json` and /api/clusters, built for each on every read.

    Its times are datetimes, which output.json writes as fmt.iso does; the decoder's are UTC
    already, so only another zone's is converted. A third of the cost of calling iso() and
    the properties: this runs 10,000 times in a cold `status --json` (docs/performance.md).
    """
    tob, timestamp = stat.tob, stat.timestamp
    return {
        "name": stat.name,
        "cluster_id": stat.cluster_id,
        "host": stat.host,
        "pid": stat.pid,
        "sentinel": stat.sentinel,
        "workers": stat.workers,  # written as an array: no copy to a list
        "pool": len(stat.workers),  # stat.pool
        "status": stat.status,
        "task_q_size": stat.task_q_size,
        "done_q_size": stat.done_q_size,
        "reincarnations": stat.reincarnations,
        "tob": tob if tob.tzinfo is UTC else iso(tob),
        "timestamp": timestamp if timestamp.tzinfo is UTC else iso(timestamp),
        "uptime_s": round((timestamp - tob).total_seconds(), 3),  # stat.uptime_s
        # Django Q leaves the broker out of its record (django-q2 issue 139): which queue a
        # cluster serves cannot be told from outside, so say so rather than guess.
        "queue": UNKNOWN_QUEUE,
    }


async def read_text(settings: Settings, *, as_json_text: bool, pretty: bool = False) -> str:
    """`qwatch status`'s output: the table, or the JSON (compact unless `pretty`).

    Returned as text, not as the polls, on purpose: Python 3.11's asyncio.run looks up its
    SIGINT handler on the way out, and that builds the repr of the main task, result
    included; a list of 10,000 clusters costs 0.15 s to repr, a string is cut at 30 chars.
    """
    polls = await read_all(settings)
    return as_json(polls, pretty=pretty) if as_json_text else as_table(polls)


def backlog_json(backlog: Backlog) -> dict[str, object]:
    return {
        "queue": backlog.queue,
        "broker": backlog.broker,
        "length": backlog.length,
        "oldest_age_s": None if backlog.oldest_age_s is None else round(backlog.oldest_age_s, 3),
        "reason": backlog.reason,
    }


def backlog_text(backlog: Backlog) -> str:
    """`3`, `3, oldest 0:01:05`, or `? (why)` for a backlog that cannot be read."""
    if backlog.length is None:
        return f"? ({backlog.reason})" if backlog.reason else "?"
    if backlog.oldest_age_s is None:
        return str(backlog.length)
    return f"{backlog.length}, oldest {hms(backlog.oldest_age_s)}"


def as_json(polls: Sequence[Poll], *, pretty: bool = False) -> str:
    return output.json(
        {
            "clusters": [cluster_json(s) for poll in polls for s in poll.clusters],
            "backlogs": [backlog_json(b) for poll in polls for b in poll.backlogs],
            "skipped": [{"key": s.key, "reason": s.reason} for poll in polls for s in poll.skipped],
        },
        pretty=pretty,
    )


def as_table(polls: Sequence[Poll], now: datetime | None = None) -> str:
    """qmonitor's columns; Up counts from the time of birth to now, as qmonitor does."""
    now = now or datetime.now(UTC)
    several = len(polls) > 1
    headers = ("Site", *COLUMNS) if several else COLUMNS
    rows = []
    for poll in polls:
        for s in poll.clusters:
            row = [
                s.host,
                s.short_id,
                s.status,
                s.pool,
                s.task_q_size,
                s.done_q_size,
                s.reincarnations,
                hms((now - s.tob).total_seconds()),
            ]
            rows.append([poll.site, *row] if several else row)
    offset = 1 if several else 0
    body = output.table(headers, rows, right={offset + i for i in (3, 4, 5, 6, 7)})
    return "\n".join([body, *footer(polls)])


def footer(polls: Sequence[Poll]) -> list[str]:
    clusters = sum(len(p.clusters) for p in polls)
    lines = [f"{clusters} cluster{'s' if clusters != 1 else ''}"]
    for poll in polls:
        for backlog in poll.backlogs:
            lines.append(f"Queued {backlog.queue} ({backlog.broker}): {backlog_text(backlog)}")
    reasons = Counter(s.reason for poll in polls for s in poll.skipped)
    if reasons:
        summary = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        lines.append(f"Skipped {sum(reasons.values())} record(s): {summary}")
    return lines
