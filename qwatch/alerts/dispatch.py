"""The sampling daemon's alerting: each site's rules after every poll, and one task that
sends what they decide, so that no poll ever waits on a target.

`SiteAlerts` is one site's state while this daemon samples it: its `Evaluator` (resumed
from the alerts table at takeover) and what was sent for each alert (`Sent`, resumed from
the table's last_notified_* columns, so a restarted daemon sends nothing twice).
`Dispatcher` holds the queue of messages and the task that delivers them
(`qwatch.alerts.notify`), logs each outcome, reports a target that stays down once a
minute at most, and hands what was sent back to the daemon to store. It reads the
silences every few seconds; the plan (`qwatch.alerts.schedule`) leaves silenced alerts
out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from qwatch.alerts.notify import Outcome, deliver_all, unreachable
from qwatch.alerts.payloads import FIRING, Message, subject_of
from qwatch.alerts.rules import Alert, AlertKey, Change, Evaluator, Poll, SiteEvent
from qwatch.alerts.schedule import Sent, due
from qwatch.alerts.silences import Silence
from qwatch.config.alerts import AlertSettings

log = logging.getLogger("qwatch.alerts")

SILENCES_REFRESH_S = 2.0  # a new silence holds within this long
TARGET_DOWN_REPORT_S = 60.0  # a target that stays down is reported this often at most
RETRY_FAILED_S = 60.0  # a firing no target took is tried again after this long


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class SiteAlerts:
    """One sampled site's alerts: the rules' state, and what was sent for each alert."""

    evaluator: Evaluator
    sent: dict[AlertKey, Sent] = field(default_factory=dict)
    held: dict[AlertKey, datetime] = field(default_factory=dict)  # not tried again before
    change: Change = field(default_factory=Change)  # the last poll's

    @classmethod
    def resumed(
        cls, evaluator: Evaluator, notified: Iterable[tuple[Alert, str, datetime]]
    ) -> SiteAlerts:
        sent = {a.key: Sent(a.started_at, status, at) for a, status, at in notified}
        return cls(evaluator, sent)

    def evaluate(self, poll: Poll, events: Iterable[SiteEvent]) -> Change:
        self.change = self.evaluator.evaluate(poll, events)
        for alert in self.change.resolved:
            self.held.pop(alert.key, None)
        return self.change

    def plan(self, at: datetime, repeat_s: float, silences: Iterable[Silence]) -> list[Message]:
        """The messages due after the last poll, each marked as sent at once (a message in
        flight is not planned again; `failed` takes the mark back)."""
        messages = due(
            self.evaluator.site,
            self.change,
            self.sent,
            at=at,
            repeat_s=repeat_s,
            silences=silences,
            held=self.held,
        )
        for message in messages:
            for alert in message.alerts:
                self.sent[alert.key] = Sent(alert.started_at, message.status, at)
        for alert in self.change.resolved:
            self.sent.pop(alert.key, None)  # ended: its next start is a new alert
        self.change = Change(firing=self.change.firing)  # planned once per poll
        return messages

    def failed(self, message: Message, at: datetime) -> None:
        """No target took `message`: a firing is tried again after RETRY_FAILED_S."""
        if message.status != FIRING:
            return
        for alert in message.alerts:
            last = self.sent.get(alert.key)
            if last is not None and last.status == FIRING and last.at <= at:
                del self.sent[alert.key]
                self.held[alert.key] = at + timedelta(seconds=RETRY_FAILED_S)


Store = Callable[[str, tuple[tuple[Alert, str, datetime], ...]], None]
ReadSilences = Callable[[datetime], Awaitable[list[Silence]]]


class Dispatcher:
    """The delivery task (`run`) and its queue; see the module docstring."""

    def __init__(self, settings: AlertSettings, read_silences: ReadSilences, store: Store) -> None:
        self.settings = settings
        self._read_silences = read_silences
        self._store = store
        self._queue: asyncio.Queue[tuple[SiteAlerts, Message, datetime]] = asyncio.Queue()
        self.silences: tuple[Silence, ...] = ()
        self._silences_at = float("-inf")
        self._down: dict[str, float] = {}  # target label -> loop time last reported down

    def after_poll(self, alerts: SiteAlerts, at: datetime) -> None:
        """Queue what the site's last poll made due (never waits)."""
        for message in alerts.plan(at, self.settings.repeat_s, self.silences):
            self._queue.put_nowait((alerts, message, at))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await self.check_targets()
        # One get() kept across the waits: cancelling one at a timeout could lose a message.
        getting = asyncio.ensure_future(self._queue.get())
        try:
            while True:
                wait = max(0.0, self._silences_at + SILENCES_REFRESH_S - loop.time())
                await asyncio.wait({getting}, timeout=wait)
                if loop.time() - self._silences_at >= SILENCES_REFRESH_S:
                    await self._refresh_silences()
                if getting.done():
                    job = getting.result()
                    getting = asyncio.ensure_future(self._queue.get())
                    await self._send(*job)
        finally:
            getting.cancel()

    async def check_targets(self) -> None:
        """At start, a warning for each target that cannot be reached: not a reason to
        refuse to start (it may come up before the first alert, which is retried anyway)."""
        targets = self.settings.targets
        reasons = await asyncio.gather(
            *(unreachable(target, self.settings.timeout_s) for target in targets)
        )
        for target, reason in zip(targets, reasons, strict=True):
            if reason is not None:
                log.warning("alert target %s cannot be reached now: %s", target.label, reason)

    async def _refresh_silences(self) -> None:
        self._silences_at = asyncio.get_running_loop().time()
        try:
            self.silences = tuple(await self._read_silences(utcnow()))
        except Exception as exc:  # the database is down: keep the ones known
            log.debug("could not read the silences (%s); keeping %d", exc, len(self.silences))

    async def _send(self, alerts: SiteAlerts, message: Message, planned_at: datetime) -> None:
        settings = self.settings
        outcomes = await deliver_all(
            settings.targets, message, timeout_s=settings.timeout_s, attempts=settings.attempts
        )
        about = subject_of(message).removeprefix("[qwatch] ")
        for outcome in outcomes:
            self._log(outcome, about)
        if any(outcome.ok for outcome in outcomes):
            at = utcnow()
            self._store(message.site, tuple((a, message.status, at) for a in message.alerts))
        else:
            alerts.failed(message, planned_at)

    def _log(self, outcome: Outcome, about: str) -> None:
        now = asyncio.get_running_loop().time()
        if outcome.ok:
            if self._down.pop(outcome.target, None) is not None:
                log.info("alert target %s is back", outcome.target)
            log.info(
                "sent %s to %s (%d attempt(s), %.1f s)",
                about,
                outcome.target,
                outcome.attempts,
                outcome.seconds,
            )
            return
        last = self._down.get(outcome.target)
        if last is None or now - last >= TARGET_DOWN_REPORT_S:
            self._down[outcome.target] = now
            log.warning(
                "could not send %s to %s after %d attempt(s): %s",
                about,
                outcome.target,
                outcome.attempts,
                outcome.error,
            )
