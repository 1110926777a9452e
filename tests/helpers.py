"""What many test modules share: the real captures, and one helper of each kind.

One factory per test object (`cluster_stat`, `minute_row`, `run_row`), one `free_port`,
one `wait_for` (and its asyncio twin `wait_for_async`): test modules and the plugins in
tests/plugins/ import them from here rather than writing their own. The decoder tests'
hand-made records are in tests/records.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from qwatch.alerts.rules import Alert
from qwatch.demo.processes import free_port
from qwatch.rollup import MinuteRow
from qwatch.values import ClusterStat, Run

__all__ = [
    "CAPTURE_ROTATED_SECRET",
    "CAPTURE_SECRET",
    "CAPTURE_SITE",
    "EXPECTED",
    "FIXTURES",
    "PAYLOADS",
    "cluster_stat",
    "free_port",  # the product's own (qwatch.demo.processes): one definition in the repository
    "minute_row",
    "run_row",
    "wait_for",
    "wait_for_async",
]

# The one name for the test data folder: everything a test reads lives in the repository.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PAYLOADS = FIXTURES / "payloads"
EXPECTED: dict[str, dict[str, Any]] = json.loads((FIXTURES / "expected.json").read_text())

# How the captures were signed (tests/fixtures/README.md).
CAPTURE_SITE = "researchq"
CAPTURE_SECRET = "research-secret-key-q2-0123456789abcdef"
CAPTURE_ROTATED_SECRET = "rotated-new-secret-key-9876543210"  # signs q2_rotatedB_idle.txt

# --------------------------------------------------------------------------- factories

STAT_TOB = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def cluster_stat(
    cluster_id: str = "c1",
    *,
    name: str = "shop",
    host: str = "web-1",
    pid: int | None = 4000,
    status: str = "Idle",
    pool: int = 2,
    tq: int = 0,
    rq: int = 0,
    rc: int = 0,
    tob: datetime = STAT_TOB,
    timestamp: datetime | None = None,
    **fields: Any,
) -> ClusterStat:
    """A decoded cluster record. The sentinel, monitor, pusher and `pool` workers take the
    pids after `pid` (none before django-q 1.2's pid); the record is written at its birth
    unless `timestamp` says otherwise; any other ClusterStat field can be given by name."""
    helper_pids = (None, None, None) if pid is None else (pid + 1, pid + 2, pid + 3)
    first_worker = 0 if pid is None else pid + 4
    stat = ClusterStat(
        name=name,
        cluster_id=cluster_id,
        host=host,
        pid=pid,
        sentinel=helper_pids[0],
        monitor=helper_pids[1],
        pusher=helper_pids[2],
        workers=tuple(range(first_worker, first_worker + pool)),
        status=status,
        task_q_size=tq,
        done_q_size=rq,
        reincarnations=rc,
        tob=tob,
        timestamp=tob if timestamp is None else timestamp,
    )
    return replace(stat, **fields) if fields else stat


def minute_row(**fields: Any) -> MinuteRow:
    """A minute rollup of cluster c1 of site shop: two Idle polls in the minute of STAT_TOB
    (1 s observed); any field can be given by name."""
    row = MinuteRow(
        site="shop",
        cluster_id="c1",
        tob=STAT_TOB,
        bucket=STAT_TOB,
        n=2,
        tq_min=1,
        tq_max=3,
        tq_avg=2.0,
        rq_min=0,
        rq_max=0,
        rq_avg=0.0,
        queued_min=None,
        queued_max=None,
        queued_avg=None,
        rc_max=1,
        pool_min=4,
        starting_s=0.0,
        idle_s=1.0,
        working_s=0.0,
        stopping_s=0.0,
        stopped_s=0.0,
        observed_s=1.0,
    )
    return replace(row, **fields) if fields else row


def run_row(
    pk: int,
    *,
    first_seen: datetime,
    last_seen: datetime,
    ended_at: datetime | None = None,
    site: str = "shop",
    cluster_id: str | None = None,
    host: str = "web-1",
    pid: int | None = None,
    tob: datetime | None = None,
    last_status: str | None = "Idle",
) -> Run:
    """A row of the `clusters` table: born when first seen unless `tob` says otherwise."""
    return Run(
        pk=pk,
        site=site,
        cluster_id=f"cluster-{pk:04d}" if cluster_id is None else cluster_id,
        host=host,
        pid=pid,
        tob=first_seen if tob is None else tob,
        first_seen=first_seen,
        last_seen=last_seen,
        ended_at=ended_at,
        last_status=last_status,
    )


# --------------------------------------------------------------------------- waiting


def _timed_out(timeout: float, what: str, detail: Callable[[], str] | None) -> AssertionError:
    extra = "" if detail is None else f"; {detail()}"
    return AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    step: float = 0.1,
    detail: Callable[[], str] | None = None,
) -> Any:
    """Poll `predicate` until it returns something truthy, and return that; at the
    deadline fail naming `what` (and `detail()`, what the test saw by then)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, detail)
        time.sleep(step)


async def wait_for_async(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    step: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> Any:
    """`wait_for` inside an event loop, which keeps running meanwhile; `predicate` may be a
    coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, detail)
        await asyncio.sleep(step)


def write_small_history(url: str, now: datetime, site: str = "shop") -> str:
    """Migrate `url` and store one cluster watched for the ten minutes before `now`, a
    sample a minute: a real history for the read commands. Returns the cluster id."""
    from qwatch.store import migrate
    from qwatch.store.engine import create_engine
    from qwatch.store.writer import Batch, Writer

    cluster_id = "5ma11c1u-0000-4000-8000-000000000001"
    tob = now - timedelta(minutes=30)

    def stat(at: datetime) -> ClusterStat:
        return cluster_stat(cluster_id, name=site, pid=100, tob=tob, timestamp=at)

    async def write() -> None:
        engine = create_engine(url)
        try:
            await migrate.upgrade(engine)
            writer = Writer(engine)
            for minute in range(10, -1, -1):
                at = now - timedelta(minutes=minute)
                writer.submit(Batch(site, at, seen=[stat(at)], samples=[(stat(at), 0, at)]))
            await writer.flush()
        finally:
            await engine.dispose()

    asyncio.run(write())
    return cluster_id


ALERT_T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def down_alert(**fields: Any) -> Alert:
    """A firing `cluster_down` on host web1 of site shop since ALERT_T0; any field by name."""
    alert = Alert(
        rule="cluster_down",
        site="shop",
        subject="web1",
        severity="critical",
        summary=(
            "shop: no live cluster on web1 for 1m; start qcluster there or check its supervisor"
        ),
        started_at=ALERT_T0,
        host="web1",
        details={"host": "web1", "held_s": 60.0, "for_s": 60.0, "since": ALERT_T0.isoformat()},
    )
    return replace(alert, **fields) if fields else alert


def stop_process(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM a server the tests started, by its pid, and wait; SIGKILL if it will not go."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
