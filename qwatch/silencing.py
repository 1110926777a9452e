"""`qwatch silence add|list|remove`: maintenance windows in which alerts still record but
nothing is sent (the daemon reads them every few seconds; qwatch.alerts.silences matches).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from qwatch import output
from qwatch.alerts.silences import ALL, Silence
from qwatch.alerts.thresholds import RULES
from qwatch.config import Settings
from qwatch.durations import parse_duration
from qwatch.errors import UserError
from qwatch.fmt import UTC_ZONE, Zone, iso, when_in
from qwatch.store import reads
from qwatch.store import silences as store


class BadSilence(UserError, ValueError):
    """A silence that cannot be: an unknown rule, a bad duration, no reason, no such id."""


@dataclass(frozen=True)
class NewSilence:
    rule: str
    site: str | None
    host: str | None
    for_: str
    reason: str


def check(new: NewSilence, now: datetime) -> datetime:
    """The silence's end; BadSilence naming what is wrong."""
    if new.rule != ALL and new.rule not in RULES:
        raise BadSilence(f"unknown rule {new.rule!r} ({', '.join(RULES)}, or {ALL})")
    span = parse_duration(new.for_)
    if span.total_seconds() <= 0:
        raise BadSilence("--for must be longer than 0s")
    if not new.reason.strip():
        raise BadSilence("--reason must say why (it is shown with the silence)")
    return now + span


def describe(silence: Silence, zone: Zone = UTC_ZONE) -> str:
    where = "".join(
        f" {label} {value}"
        for label, value in (("site", silence.site), ("host", silence.host))
        if value is not None
    )
    return (
        f"silence {silence.id}: {silence.rule}{where} until {when_in(silence.until, zone)}: "
        f"{silence.reason}"
    )


async def add(settings: Settings, new: NewSilence, now: datetime | None = None) -> str:
    at = now or datetime.now(UTC)
    until = check(new, at)
    engine = await reads.open_reader(settings.database_url)
    try:
        async with engine.begin() as conn:
            found = await store.add(
                conn,
                rule=new.rule,
                site=new.site,
                host=new.host,
                until=until,
                reason=new.reason.strip(),
                created_at=at,
            )
    finally:
        await engine.dispose()
    made = Silence(found, new.rule, new.site, new.host, until, new.reason.strip(), at)
    return describe(made, settings.display_zone)


async def remove(settings: Settings, silence_id: int) -> str:
    engine = await reads.open_reader(settings.database_url)
    try:
        async with engine.begin() as conn:
            removed = await store.remove(conn, silence_id)
    finally:
        await engine.dispose()
    if not removed:
        raise BadSilence(f"no silence {silence_id} (`qwatch silence list` shows them)")
    return f"removed silence {silence_id}"


HEADERS = ("id", "rule", "site", "host", "until", "reason")


async def listing(settings: Settings, fmt: str = "table", now: datetime | None = None) -> str:
    """The silences in force now."""
    async with reads.reader(settings.database_url) as conn:
        found = await reads.silences(conn, active_at=now or datetime.now(UTC))
    return render(found, fmt, settings.display_zone)


def render(found: list[Silence], fmt: str, zone: Zone = UTC_ZONE) -> str:
    if fmt == "json":
        return output.json(
            [
                {
                    "id": s.id,
                    "rule": s.rule,
                    "site": s.site,
                    "host": s.host,
                    "until": iso(s.until),
                    "reason": s.reason,
                    "created_at": iso(s.created_at),
                }
                for s in found
            ],
            pretty=True,
        )
    if fmt == "csv":
        return output.csv(
            (*HEADERS, "created_at"),
            (
                [s.id, s.rule, s.site, s.host, iso(s.until), s.reason, iso(s.created_at)]
                for s in found
            ),
        )
    if not found:
        return "no silence in force"
    headers = [zone.header(h) if h == "until" else h for h in HEADERS]
    rows = [
        [
            s.id,
            s.rule,
            s.site or "*",
            s.host or "*",
            when_in(s.until, zone).removesuffix(f" {zone.name}"),
            s.reason,
        ]
        for s in found
    ]
    return output.table(headers, rows, right={0})
