"""Which record keys a poll reads: the known ones every time, new ones found little by little.

Pure, no I/O: RedisSource sends the commands and reports what came back.

Walking a shared keyspace every poll costs Redis time in proportion to *all* its keys (with
1 M other keys, 0.64 s of Redis CPU per poll). So after one full sweep (the first poll after
a connect, which is also all a one-shot `qwatch status` does) the known record keys are read
with MGET every poll, and new keys are looked for by a SCAN whose cursor is carried from
poll to poll and whose size is paid from a budget of Redis time (`ScanBudget`): by default
1 % of one Redis core. Keyspace notifications, when the server already sends them, add keys
as they are written (sources.notify).

A key found after the sweep may have been there unseen since the start of the previous SCAN
pass (a pass returns every key that existed for the whole of it), so each newly found key
carries that time, `since` (Poll.late): events.Tracker dates the cluster's `appeared` event
by its time of birth, clamped to [since, poll time].
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

DEFAULT_SHARE = 0.01  # of one Redis core, for the incremental SCAN
# A first estimate on the pessimistic side of what one unit of COUNT costs (0.6 us measured
# on a laptop-class core with 1 M keys, docs/performance.md); the round trips correct it.
INITIAL_COST_PER_COUNT_S = 2e-6
MIN_COUNT = 100  # below that a call's fixed cost dominates: wait and send a bigger one
# Redis runs one command at a time: a SCAN of 5,000 slots holds others up for ~3 ms at most.
MAX_COUNT = 5_000
MAX_CALLS_PER_POLL = 8
CREDIT_WINDOW_S = 10.0  # unspent credit is kept for this long, so a pause buys no big burst
_SMOOTHING = 0.2  # weight of the newest round trip in the running estimate


@dataclass
class ScanBudget:
    """A token bucket of Redis seconds for SCAN, earned at `share` of wall time.

    A call goes out whenever the credit is positive and is charged what it cost, so the
    credit may go below zero once; the calls wait until it is repaid, which keeps the
    average within the share. What a call cost is an upper bound: its round trip (which
    includes the network), or less when INFO commandstats says so: SCAN's usec since the
    last sample over the COUNT we sent meanwhile (an upper bound too: it includes other
    clients' SCANs). The COUNT of a call is what the credit pays for at the cost per unit
    of COUNT seen so far.
    """

    share: float = DEFAULT_SHARE
    cost_per_count_s: float = INITIAL_COST_PER_COUNT_S
    _credit_s: float = 0.0
    _earned_at: float | None = None
    _stated: float | None = None  # commandstats' seconds per unit of COUNT we sent

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError(f"the SCAN share must be in (0, 1], not {self.share}")

    @property
    def credit_s(self) -> float:
        return self._credit_s

    def earn(self, now: float) -> None:
        """Credit the time since the last call (a monotonic clock)."""
        if self._earned_at is not None and now > self._earned_at:
            cap = self.share * CREDIT_WINDOW_S
            self._credit_s = min(cap, self._credit_s + (now - self._earned_at) * self.share)
        self._earned_at = now

    def next_count(self) -> int:
        """The COUNT of the next call, or 0 while the credit is not positive."""
        if self._credit_s <= 0:
            return 0
        return max(MIN_COUNT, min(MAX_COUNT, int(self._credit_s / self.cost_per_count_s)))

    def spent(self, count: int, round_trip_s: float) -> float:
        """One SCAN of `count` took `round_trip_s`: charge it, learn from it; the charge."""
        cost = max(round_trip_s, 0.0)
        if self._stated is not None:
            cost = min(cost, count * self._stated)
        per = cost / count
        self.cost_per_count_s += _SMOOTHING * (per - self.cost_per_count_s)
        self._credit_s -= cost
        return cost

    def stated(self, usec: float, count: int) -> None:
        """INFO commandstats: SCAN took `usec` in all while we sent `count` units of COUNT."""
        if count > 0 and usec >= 0:
            self._stated = usec / 1e6 / count


@dataclass
class Discovery:
    """The record keys of one site: known set, SCAN cursor, and when new keys were found."""

    budget: ScanBudget = field(default_factory=ScanBudget)
    cursor: bytes = b"0"
    _known: dict[bytes, None] = field(default_factory=dict)  # ordered: reads are stable
    _fresh: dict[bytes, datetime] = field(default_factory=dict)  # found late, not read yet
    # When MGET last found nothing under a key: found again, it cannot be older than that
    # (a cluster whose record lapsed and came back must not appear before it vanished).
    _dropped: dict[bytes, datetime] = field(default_factory=dict)
    _swept: bool = False
    _pass_started: datetime | None = None
    _since: datetime | None = None  # the start of the previous pass: see the module doc

    @property
    def needs_sweep(self) -> bool:
        return not self._swept

    @property
    def known(self) -> Sequence[bytes]:
        return tuple(self._known)

    def reset(self) -> None:
        """After a (re)connect: the next poll sweeps the whole keyspace again."""
        self._swept = False
        self.cursor = b"0"
        self._fresh.clear()
        self._dropped.clear()

    def swept(self, keys: Iterable[bytes], started: datetime) -> None:
        """A full SCAN that started at `started` returned `keys`."""
        self._known.update(dict.fromkeys(keys))
        self._swept = True
        self.cursor = b"0"
        self._since = self._pass_started = started

    def scanned(self, cursor: bytes, keys: Iterable[bytes], at: datetime) -> None:
        """One incremental SCAN call came back at `at` with `cursor` and `keys`."""
        self._found(keys)
        self.cursor = cursor
        if cursor == b"0":  # a pass ended; the next one starts now
            self._since, self._pass_started = self._pass_started, at
            since = self._since
            if since is not None:  # a drop before `since` no longer narrows anything
                self._dropped = {k: d for k, d in self._dropped.items() if d > since}

    def noticed(self, keys: Iterable[bytes]) -> None:
        """Keys a keyspace notification named (already filtered to the site's prefix)."""
        self._found(keys)

    def _found(self, keys: Iterable[bytes]) -> None:
        known, since, dropped = self._known, self._since, self._dropped
        for key in keys:
            if key not in known:
                known[key] = None
                if since is not None:
                    gone = dropped.pop(key, None)
                    self._fresh[key] = since if gone is None else max(since, gone)

    def read(
        self, keys: Sequence[bytes], values: Sequence[object], at: datetime
    ) -> dict[bytes, datetime]:
        """MGET of `keys` at `at` returned `values`: forget the keys it found nothing under,
        and hand out (once) the `since` of the keys found late that were read now."""
        known, fresh = self._known, self._fresh
        late: dict[bytes, datetime] = {}
        for key, value in zip(keys, values, strict=True):
            since = fresh.pop(key, None)
            if value is None:
                known.pop(key, None)
                if self._swept:
                    self._dropped[key] = at
            elif since is not None:
                late[key] = since
        return late
