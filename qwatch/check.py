"""`qwatch check`: one live read judged against thresholds, as a Nagios plugin answers.

Pure: the polls, the history's watch marks and now are passed in; the answer is an exit
status with Nagios's meaning (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, not the table the
other commands use) and one line of output ending in performance data. A cluster missing
or in a state it must not be in is CRITICAL; a queue, backlog or sampling daemon that is
falling behind is WARNING.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from qwatch.values import STATES, Poll, backlog_total


class Status(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class Thresholds:
    host: str | None = None  # None: every host
    min_clusters: int | None = None
    state_not: frozenset[str] = frozenset()
    max_task_queue: int | None = None
    max_backlog: int | None = None
    max_sample_age_s: float | None = None


@dataclass(frozen=True)
class Verdict:
    status: Status
    line: str  # "QWATCH OK - … | perfdata"


@dataclass
class _Findings:
    problems: list[tuple[Status, str]] = field(default_factory=list)

    def add(self, status: Status, text: str) -> None:
        self.problems.append((status, text))


def parse_states(text: str) -> frozenset[str]:
    """`Stopping,Stopped` as a set of states; ValueError naming an unknown one."""
    names = {part.strip() for part in text.split(",") if part.strip()}
    by_lower = {state.lower(): state for state in STATES}
    unknown = sorted(n for n in names if n.lower() not in by_lower)
    if unknown:
        raise ValueError(f"unknown state {unknown[0]!r} (states: {', '.join(STATES)})")
    return frozenset(by_lower[n.lower()] for n in names)


def unknown(reason: str) -> Verdict:
    return Verdict(Status.UNKNOWN, f"QWATCH UNKNOWN - {reason}")


def evaluate(
    polls: Sequence[Poll],
    limits: Thresholds,
    now: datetime,
    watch_marks: Mapping[str, datetime | None] | None = None,
) -> Verdict:
    """The verdict on one read of every site (and, for --max-sample-age, their watch marks)."""
    clusters = [
        stat
        for poll in polls
        for stat in poll.clusters
        if limits.host is None or stat.host == limits.host
    ]
    where = f" on {limits.host}" if limits.host else ""
    found = _Findings()
    if limits.min_clusters is not None and len(clusters) < limits.min_clusters:
        found.add(
            Status.CRITICAL,
            f"{len(clusters)} cluster(s){where}, fewer than {limits.min_clusters}",
        )
    for stat in clusters:
        if stat.status in limits.state_not:
            found.add(Status.CRITICAL, f"cluster {stat.short_id} on {stat.host} is {stat.status}")
    task_queue = max((stat.task_q_size for stat in clusters), default=0)
    if limits.max_task_queue is not None and task_queue > limits.max_task_queue:
        found.add(Status.WARNING, f"task queue {task_queue} above {limits.max_task_queue}")
    queues = [b for poll in polls for b in poll.backlogs]
    backlog = backlog_total(queues)
    if limits.max_backlog is not None:
        # The limit is per queue; a queue whose backlog cannot be read is not "fine".
        for queue in queues:
            if queue.length is None:
                found.add(Status.UNKNOWN, f"queue {queue.queue} backlog unknown: {queue.reason}")
            elif queue.length > limits.max_backlog:
                name = f"queue {queue.queue} " if len(queues) > 1 else ""
                found.add(
                    Status.WARNING,
                    f"{name}broker backlog {queue.length} above {limits.max_backlog}",
                )
    age: float | None = None
    if limits.max_sample_age_s is not None:
        marks = watch_marks or {}
        ages = [
            (now - mark).total_seconds() if mark is not None else None
            for mark in (marks.get(poll.site) for poll in polls)
        ]
        if any(a is None for a in ages):
            found.add(Status.WARNING, "no daemon has ever sampled this site")
        known = [a for a in ages if a is not None]
        age = max(known) if known else None
        if age is not None and age > limits.max_sample_age_s:
            found.add(
                Status.WARNING,
                f"last sample {age:.0f}s ago, older than {limits.max_sample_age_s:g}s",
            )

    status = max((s for s, _ in found.problems), default=Status.OK)
    if status is Status.UNKNOWN and any(s is Status.CRITICAL for s, _ in found.problems):
        status = Status.CRITICAL  # a known failure outranks a backlog that cannot be read
    if found.problems:
        summary = "; ".join(text for s, text in found.problems if s == status)
    else:
        summary = f"{len(clusters)} cluster(s){where}"
        if backlog is not None:
            summary += f", backlog {backlog}"
    perf = [_perf("clusters", len(clusters), crit=_at_least(limits.min_clusters), low=0)]
    perf.append(_perf("task_queue", task_queue, warn=limits.max_task_queue, low=0))
    if backlog is not None:
        perf.append(_perf("backlog", backlog, warn=limits.max_backlog, low=0))
    if len(queues) > 1:
        for queue in queues:
            if queue.length is not None:
                perf.append(
                    _perf(f"backlog_{queue.queue}", queue.length, warn=limits.max_backlog, low=0)
                )
    if age is not None:
        perf.append(_perf("sample_age", round(age, 1), warn=limits.max_sample_age_s, unit="s"))
    return Verdict(status, f"QWATCH {status.name} - {summary} | {' '.join(perf)}")


def _at_least(n: int | None) -> str | None:
    return None if n is None else f"{n}:"  # Nagios range: alert when below n


def _perf(
    name: str,
    value: float,
    *,
    warn: float | str | None = None,
    crit: float | str | None = None,
    low: float | None = None,
    unit: str = "",
) -> str:
    fields = [
        "" if x is None else f"{x:g}" if isinstance(x, float) else str(x) for x in (warn, crit, low)
    ]
    return f"{name}={value:g}{unit};{';'.join(fields)}".rstrip(";")
