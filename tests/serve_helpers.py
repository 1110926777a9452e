"""Plain ClusterStats, Polls and Snapshots for the listener's tests (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from qwatch.serve.state import ListenerState, SiteSnapshot, Snapshot
from qwatch.values import Backlog, ClusterStat, Poll, Skipped

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SITE = "shop"


def stat(cluster_id: str = "c1", host: str = "web1", **changes: object) -> ClusterStat:
    values: dict[str, object] = {
        "name": SITE,
        "cluster_id": cluster_id,
        "host": host,
        "pid": 100,
        "sentinel": 101,
        "monitor": 102,
        "pusher": 103,
        "workers": (201, 202),
        "status": "Idle",
        "task_q_size": 0,
        "done_q_size": 0,
        "reincarnations": 0,
        "tob": T0 - timedelta(hours=1),
        "timestamp": T0,
    }
    values.update(changes)
    return ClusterStat(**values)  # type: ignore[arg-type]  # changes: any field, by name


def poll(
    *clusters: ClusterStat,
    at: datetime = T0,
    queued: int = 3,
    skipped: int = 0,
    backlogs: tuple[Backlog, ...] | None = None,
) -> Poll:
    """A poll of SITE; its backlog the main queue's `queued` unless `backlogs` are given."""
    return Poll(
        site=SITE,
        at=at,
        clusters=clusters,
        skipped=tuple(Skipped(f"k{i}", "bad signature") for i in range(skipped)),
        backlogs=(Backlog(SITE, "redis", queued),) if backlogs is None else backlogs,
    )


def snapshot(
    at: datetime,
    *clusters: ClusterStat,
    leader: bool = True,
    error: str | None = None,
    events: dict[str, int] | None = None,
    pending: int = 0,
    read: bool = True,
    backlogs: tuple[Backlog, ...] | None = None,
) -> Snapshot:
    site = SiteSnapshot(
        site=SITE,
        leader=leader,
        duration_s=0.02,
        poll=poll(*clusters, at=at, backlogs=backlogs)
        if leader and read and error is None
        else None,
        error=error,
        events=events or {},
    )
    return Snapshot(at=at, sites=(site,), pending=pending, dropped=0, capacity=3600)


def state_after(*snapshots: Snapshot) -> ListenerState:
    state = ListenerState(interval_s=1.0, version="0.1.0")
    for one in snapshots:
        state.observe(one)
    return state
