"""Fencing tokens: each takeover of a site bumps its token, and a batch is written only
while the token it carries is still the site's, so a sampler that paused (SIGSTOP, a VM
freeze, a long GC) while another daemon took its site over writes nothing afterwards.

The Redis lock says who should sample; only the database, in the write's own transaction,
can say that a write is still the current sampler's.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from qwatch.store import models as m
from qwatch.store.dialect import Dialect


async def take_over(conn: AsyncConnection, site: str) -> int:
    """Bump `site`'s token and return it: from now on only batches carrying it are written."""
    f = m.Fence.__table__
    stmt = Dialect.of(conn).insert(f).values(site=site, token=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["site"], set_={"token": f.c.token + 1}
    ).returning(f.c.token)
    token = (await conn.execute(stmt)).scalar_one()
    return int(token)


async def holds(conn: AsyncConnection, site: str, token: int) -> bool:
    """Whether `token` is still `site`'s; called first in a batch's transaction.

    An UPDATE rather than a SELECT: it takes the row's write lock (PostgreSQL) or the
    database's (SQLite) until the commit, so a takeover's bump waits for this write to
    end instead of slipping in between the check and the rows.
    """
    result = await conn.execute(
        update(m.Fence)
        .where(m.Fence.site == site, m.Fence.token == token)
        .values(token=m.Fence.token)
    )
    return bool(result.rowcount)


async def current_token(conn: AsyncConnection, site: str) -> int | None:
    """`site`'s token, or None before any daemon took it over (for messages)."""
    f = m.Fence.__table__
    token = await conn.scalar(select(f.c.token).where(f.c.site == site))
    return None if token is None else int(token)
