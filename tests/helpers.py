"""What many test modules share: the real captures, and (below) one helper of each kind."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

# The one name for the test data folder: everything a test reads lives in the repository.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PAYLOADS = FIXTURES / "payloads"
EXPECTED: dict[str, dict[str, Any]] = json.loads((FIXTURES / "expected.json").read_text())

# How the captures were signed (tests/fixtures/README.md).
CAPTURE_SITE = "researchq"
CAPTURE_SECRET = "research-secret-key-q2-0123456789abcdef"
CAPTURE_ROTATED_SECRET = "rotated-new-secret-key-9876543210"  # signs q2_rotatedB_idle.txt


def write_small_history(url: str, now: datetime, site: str = "shop") -> str:
    """Migrate `url` and store one cluster watched for the ten minutes before `now`, a
    sample a minute: a real history for the read commands. Returns the cluster id."""
    import asyncio

    from qwatch.store import migrate
    from qwatch.store.engine import create_engine
    from qwatch.store.writer import Batch, Writer
    from qwatch.values import ClusterStat

    cluster_id = "5ma11c1u-0000-4000-8000-000000000001"
    tob = now - timedelta(minutes=30)

    def stat(at: datetime) -> ClusterStat:
        return ClusterStat(
            name=site, cluster_id=cluster_id, host="web-1", pid=100, sentinel=None,
            monitor=None, pusher=None, workers=(1, 2), status="Idle", task_q_size=0,
            done_q_size=0, reincarnations=0, tob=tob, timestamp=at,
        )  # fmt: skip

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
