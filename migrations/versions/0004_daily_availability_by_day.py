"""daily_availability, computed for the days asked for only: same rules, columns and rows.

Revision ID: 0004_daily_availability_by_day
Revises: 0003_watch_marks
Create Date: 2026-11-27

0002's view builds every host-day from each host's first sighting, merges every run into
islands and joins the two over the whole history; the outer `WHERE day >= …` applies only
after that, as neither engine pushes a filter into a recursive CTE, through window
functions or below a join of CTEs it has materialized. On a year of 50 clusters (SQLite,
benchmarks/build_history.py) that took 145 to 175 ms for a day or 30 days alike: a
23,500-row island-day expansion, its join to 18,300 host-days through an index built on
the fly, and a GROUP BY of 43,800 parts, none of them a slow step alone.

Here the work is ordered so that a filter on `day` (or `site`, `host`) prunes the rows
before the costly part:

- `days` is a plain join of the hosts and a calendar: both engines apply the outer filter
  to it. Before it come only per-host figures and the calendar.
- Each remaining host-day reads its own runs through `ix_clusters_host_first_seen`: a run
  overlapping the day started at most the host's longest run before the day, which bounds
  the index range. Overlapping runs count once: each run counts only beyond the furthest
  end of the runs before it that day (`reach`), which is what 0002's islands did.
- Gaps are looked at only on the days a gap touches (`gap_days`, as in 0002).
- `daily` is one row per host-day, grouped: without the GROUP BY both planners inline it
  into the final SELECT and run its subqueries once per output column that uses them
  (three or four times each).

The per-host figures (first sighting, last run, longest run) still come from every run:
one pass over `clusters`, 10 to 15 ms for a year of 50 clusters on SQLite.

It also reads 0003's watch marks, as qwatch/store/reads.py does: time since a mark more
than STALE_AFTER old (no daemon sampling now) is a gap, and an open gap ends at that mark.
And `redis_gaps` lists only the gaps of kind 'redis'.

0002's `_Dialect` supplies the engine-specific time expressions, and its definitions are
what downgrade restores: loaded from the 0002 script, since revisions are frozen history.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0004_daily_availability_by_day"
down_revision: str | Sequence[str] | None = "0003_watch_marks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DAY_S = 86400


def _load_0002() -> ModuleType:
    path = Path(__file__).with_name("0002_report_views.py")
    spec = importlib.util.spec_from_file_location("qwatch_revision_0002", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_0002 = _load_0002()
STALE_AFTER_S = _0002.STALE_AFTER_S


def daily_availability(d: _0002._Dialect) -> str:
    """0002's daily_availability (the rules of qwatch/timeline.py, the same columns and
    rows), computed per host-day so that a filter on the day prunes the work."""
    e = d.epoch

    def least(*xs: str) -> str:
        out = xs[0]
        for x in xs[1:]:
            out = d.least(out, x)
        return out

    def greatest(*xs: str) -> str:
        out = xs[0]
        for x in xs[1:]:
            out = d.greatest(out, x)
        return out

    def up_to(now: str, seen: str, ended: str) -> str:
        """Where a run's up time ends: ended, or now while refreshed, else last seen."""
        return (
            f"CASE WHEN {ended} IS NOT NULL THEN {ended} "
            f"WHEN {now} - {seen} > {STALE_AFTER_S} THEN {seen} "
            f"ELSE {d.greatest(now, seen)} END"
        )

    # A run's seconds in the window beyond the runs before it (r.reach), and of those
    # the seconds inside gap g.
    run_from = greatest("r.up_from", "w.w_from", "COALESCE(r.reach, w.w_from)")
    run_s = d.greatest("0", f"{least('r.up_to', 'w.w_to')} - {run_from}")
    run_gap_s = d.greatest(
        "0", f"{least('r.up_to', 'g.g_to', 'w.w_to')} - {greatest(run_from, 'g.g_from')}"
    )
    gap_s = f"{least('g.g_to', 'w.w_to')} - {greatest('g.g_from', 'w.w_from')}"
    return f"""
WITH RECURSIVE
clock AS (SELECT {d.now_epoch} AS now_e),
states AS (
  SELECT site, host, up_from, {up_to("now_e", "seen", "ended")} AS up_to,
    CASE WHEN ended IS NULL AND now_e - seen > {STALE_AFTER_S} THEN 1 ELSE 0 END AS stale,
    CASE WHEN ended IS NULL AND now_e - seen <= {STALE_AFTER_S} THEN 1 ELSE 0 END AS live
  FROM (
    SELECT c.site, c.host, {e("c.first_seen")} AS up_from, {e("c.last_seen")} AS seen,
      {e("c.ended_at")} AS ended, k.now_e
    FROM clusters c CROSS JOIN clock k
  ) AS lives
),
hosts AS (
  SELECT site, host, {d.floor_day("MIN(up_from)")} AS first_day, MIN(up_from) AS first_at,
    MAX(up_to) AS last_at,
    CASE WHEN MAX(stale) = 1 AND MAX(live) = 0 THEN MAX(up_to)
         ELSE (SELECT now_e FROM clock) END AS watched_to,
    MAX(up_to - up_from) AS longest_run
  FROM states GROUP BY site, host
),
calendar (day, end_day) AS (
  SELECT MIN(first_day), MAX({d.greatest("last_at", f"first_day + {DAY_S}")}) FROM hosts
  UNION ALL
  SELECT day + {DAY_S}, end_day FROM calendar WHERE day + {DAY_S} < end_day
),
-- Sites whose daemon's watch mark (0003) is stale: no daemon is sampling them now.
stopped AS (
  SELECT w.site, {e("w.watched_at")} AS stopped_e, k.now_e
  FROM watches w CROSS JOIN clock k
  WHERE k.now_e - {e("w.watched_at")} > {STALE_AFTER_S}
),
-- Recorded gaps (an open one ends where its daemon stopped), and the time since a stale mark.
gap_days (site, g_from, g_to, day) AS (
  SELECT site, g_from, g_to, {d.floor_day("g_from")}
  FROM (
    SELECT g.site, {e("g.started_at")} AS g_from,
      COALESCE({e("g.ended_at")},
               {d.greatest(e("g.started_at"), "COALESCE(s.stopped_e, k.now_e)")}) AS g_to
    FROM gaps g CROSS JOIN clock k LEFT JOIN stopped s ON s.site = g.site
    UNION ALL
    SELECT site, stopped_e, now_e FROM stopped
  ) AS spans
  WHERE g_from < g_to
  UNION ALL
  SELECT site, g_from, g_to, day + {DAY_S} FROM gap_days WHERE day + {DAY_S} < g_to
),
-- A host's days run from its first sighting's day to its last run's end, as in 0002;
-- w_from .. w_to is the part of the day in which the host was watched.
days AS (
  SELECT h.site, h.host, c.day, k.now_e, h.longest_run,
    {d.least(f"c.day + {DAY_S}", "k.now_e")} AS day_to,
    {d.greatest("c.day", "h.first_at")} AS w_from,
    {least(f"c.day + {DAY_S}", "h.watched_to", "k.now_e")} AS w_to,
    CASE WHEN gd.day IS NULL THEN 0 ELSE 1 END AS gapped
  FROM calendar c
  JOIN hosts h ON c.day >= h.first_day AND (c.day = h.first_day OR c.day < h.last_at)
  CROSS JOIN clock k
  LEFT JOIN (SELECT DISTINCT site, day FROM gap_days) AS gd
    ON gd.site = h.site AND gd.day = c.day
),
-- One row per host-day, from its own runs and gaps. A run overlapping the day started at
-- most the host's longest run before it: that bounds the (host, first_seen) index range.
-- Each run counts beyond the furthest end of the runs before it (reach), so runs that
-- overlap count once. The GROUP BY keeps the planners from inlining this into the SELECT
-- below, which would run each subquery once per column that uses its result.
daily AS (
  SELECT w.site, w.host, w.day, w.day_to - w.day AS range_s,
    CASE WHEN w.w_from < w.w_to THEN w.w_to - w.w_from ELSE 0 END
      - CASE WHEN w.gapped = 0 THEN 0 ELSE COALESCE((
          SELECT SUM({gap_s}) FROM gap_days g
          WHERE g.site = w.site AND g.day = w.day AND g.g_from < w.w_to AND g.g_to > w.w_from
        ), 0) END AS known_s,
    COALESCE((
      SELECT SUM(
        {run_s}
        - CASE WHEN w.gapped = 0 THEN 0 ELSE COALESCE((
            SELECT SUM({run_gap_s}) FROM gap_days g
            WHERE g.site = w.site AND g.day = w.day AND g.g_from < w.w_to AND g.g_to > w.w_from
              AND g.g_from < r.up_to AND g.g_to > r.up_from
          ), 0) END)
      FROM (
        SELECT up_from, up_to,
          MAX(up_to) OVER (ORDER BY up_from, up_to
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
        FROM (
          SELECT {e("c.first_seen")} AS up_from,
            {up_to("w.now_e", e("c.last_seen"), e("c.ended_at"))} AS up_to
          FROM clusters c
          WHERE c.host = w.host AND c.site = w.site
            AND c.first_seen >= {d.from_epoch("w.w_from - w.longest_run - 1")}
            AND c.first_seen < {d.from_epoch("w.w_to + 1")}
        ) AS run
        WHERE up_from < w.w_to AND up_to > w.w_from
      ) AS r
    ), 0) AS up_s
  FROM days w
  GROUP BY w.site, w.host, w.day, w.now_e, w.longest_run, w.day_to, w.w_from, w.w_to,
    w.gapped
)
SELECT site, host, {d.from_epoch("day")} AS day, up_s, known_s - up_s AS down_s,
  range_s - known_s AS unknown_s,
  CASE WHEN known_s > 0 THEN up_s / known_s END AS availability
FROM daily
"""


def _dialect() -> _0002._Dialect:
    # get_context, not get_bind: it also answers in offline (--sql) mode.
    postgresql = op.get_context().dialect.name == "postgresql"
    return _0002.POSTGRESQL if postgresql else _0002.SQLITE


def redis_gaps(d: _0002._Dialect) -> str:
    """0002's redis_gaps, of the Redis outages only now that gaps have kinds (0003)."""
    return f"{_0002.redis_gaps(d)}WHERE kind = 'redis'\n"


def upgrade() -> None:
    for name, body in (("daily_availability", daily_availability), ("redis_gaps", redis_gaps)):
        op.execute(f"DROP VIEW {name}")
        op.execute(f"CREATE VIEW {name} AS {body(_dialect())}")


def downgrade() -> None:
    for name in ("daily_availability", "redis_gaps"):
        op.execute(f"DROP VIEW {name}")
        op.execute(f"CREATE VIEW {name} AS {_0002.VIEWS[name](_dialect())}")
