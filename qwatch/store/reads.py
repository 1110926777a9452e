"""Small reads the daemon needs from its own history (the read side for people is elsewhere)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from qwatch.store.models import Cluster, Sample, Watch
from qwatch.values import ClusterStat


async def tracker_seed(
    engine: AsyncEngine, site: str, ended_since: datetime
) -> tuple[list[ClusterStat], list[ClusterStat]]:
    """(clusters still open, clusters ended since `ended_since`) of one site, as ClusterStats.

    Rebuilt from the cluster row and its newest sample: enough for the event tracker to
    carry on where the last daemon stopped (status and reincarnations to diff against,
    host and last record time to pair a restart with).
    """
    newest = (
        select(Sample.cluster_pk, func.max(Sample.sampled_at).label("at"))
        .group_by(Sample.cluster_pk)
        .subquery()
    )
    query = (
        select(
            Cluster.cluster_id,
            Cluster.host,
            Cluster.pid,
            Cluster.tob,
            Cluster.last_seen,
            Cluster.ended_at,
            Cluster.last_status,
            Sample.status,
            Sample.reincarnations,
            Sample.pool,
        )
        .outerjoin(newest, newest.c.cluster_pk == Cluster.id)
        .outerjoin(Sample, and_(Sample.cluster_pk == Cluster.id, Sample.sampled_at == newest.c.at))
        .where(Cluster.site == site)
        .where(or_(Cluster.ended_at.is_(None), Cluster.ended_at >= ended_since))
    )
    live: list[ClusterStat] = []
    ended: list[ClusterStat] = []
    async with engine.connect() as conn:
        for row in (await conn.execute(query)).all():
            stat = ClusterStat(
                name=site,
                cluster_id=row.cluster_id,
                host=row.host,
                pid=row.pid,
                sentinel=None,
                monitor=None,
                pusher=None,
                workers=(0,) * (row.pool or 0),
                status=row.status or row.last_status or "Idle",
                task_q_size=0,
                done_q_size=0,
                reincarnations=row.reincarnations or 0,
                tob=row.tob,
                timestamp=row.last_seen,
            )
            (live if row.ended_at is None else ended).append(stat)
    return live, ended


async def watched_at(engine: AsyncEngine, site: str) -> datetime | None:
    """When a daemon last wrote a poll of `site`, or None if none ever did."""
    async with engine.connect() as conn:
        return await conn.scalar(select(Watch.watched_at).where(Watch.site == site))
