"""The history's writes that come from a command, not the daemon: adding and removing
silences (`qwatch silence`). The daemon's writes are `qwatch.store.writer`'s."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from qwatch.store import models as m


async def add(
    conn: AsyncConnection,
    *,
    rule: str,
    site: str | None,
    host: str | None,
    until: datetime,
    reason: str,
    created_at: datetime,
) -> int:
    """Insert one silence; its id."""
    found = await conn.execute(
        insert(m.Silence)
        .values(rule=rule, site=site, host=host, until=until, reason=reason, created_at=created_at)
        .returning(m.Silence.id)
    )
    return int(found.scalar_one())


async def remove(conn: AsyncConnection, silence_id: int) -> bool:
    """Delete silence `silence_id`; whether there was one."""
    done = await conn.execute(delete(m.Silence).where(m.Silence.id == silence_id))
    return bool(done.rowcount)
