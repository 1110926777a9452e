"""Report views: daily availability per host, reincarnations per hour, restarts, backlog per
hour, cluster runs and Redis gaps (docs/reporting.md describes each).

Revision ID: 0002_report_views
Revises: 0001_initial
Create Date: 2026-11-28

One definition per view, the same joins, groups and columns on both engines. Only time
arithmetic differs, because SQLite keeps times as UTC text and PostgreSQL as timestamptz:
the few expressions that need it come from `_Dialect` below. PostgreSQL's are pinned to UTC
(date_trunc's time zone argument, 24-hour steps), so a psql session's TimeZone changes no
result. Kept here, not imported from qwatch: a revision is frozen history.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002_report_views"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# An open run counts as up to now while the daemon refreshes its last_seen; after this long
# without, the daemon has stopped watching (qwatch/timeline.py, STALE_AFTER).
STALE_AFTER_S = 120


class _Dialect:
    """The time and JSON expressions of one engine, as SQL text.

    A plain class: Alembic loads revisions without registering them as modules, which
    dataclasses need.
    """

    def __init__(self, **formats: str) -> None:
        self._formats = formats
        self.now = formats["now"]
        self.now_epoch = self.epoch(self.now)

    def _sql(self, name: str, **parts: str) -> str:
        return self._formats[name].format(**parts)

    def epoch(self, x: str) -> str:
        """Seconds since 1970 as a float (NULL stays NULL)."""
        return self._sql("epoch", x=x)

    def floor_day(self, x: str) -> str:
        """The start of the UTC day of epoch seconds `x`, in epoch seconds."""
        return self._sql("floor_day", x=x)

    def from_epoch(self, x: str) -> str:
        """Epoch seconds back to the engine's time."""
        return self._sql("from_epoch", x=x)

    def hour(self, x: str) -> str:
        return self._sql("hour", x=x)

    def seconds(self, a: str, b: str) -> str:
        """b - a in seconds, as a float."""
        return self._sql("seconds", a=a, b=b)

    def greatest(self, a: str, b: str) -> str:
        return self._sql("greatest", a=a, b=b)

    def least(self, a: str, b: str) -> str:
        return self._sql("least", a=a, b=b)

    def json_int(self, col: str, key: str) -> str:
        return self._sql("json_int", col=col, key=key)

    def json_text(self, col: str, key: str) -> str:
        return self._sql("json_text", col=col, key=key)

    def json_real(self, col: str, key: str) -> str:
        return self._sql("json_real", col=col, key=key)


# Times in SQLite are text in SQLAlchemy's format, 'YYYY-MM-DD HH:MM:SS.ffffff': every
# computed time keeps that format, so text comparison stays time order.
SQLITE = _Dialect(
    now="strftime('%Y-%m-%d %H:%M:%f000', 'now')",
    epoch="((julianday({x}) - 2440587.5) * 86400.0)",
    floor_day="(CAST(({x}) / 86400 AS INTEGER) * 86400.0)",  # times after 1970: a floor
    from_epoch="strftime('%Y-%m-%d %H:%M:%S.000000', {x}, 'unixepoch')",
    hour="strftime('%Y-%m-%d %H:00:00.000000', {x})",
    seconds="((julianday({b}) - julianday({a})) * 86400.0)",
    greatest="max({a}, {b})",  # SQLite's two-argument max() and min() are scalar
    least="min({a}, {b})",
    json_int="CAST(json_extract({col}, '$.{key}') AS INTEGER)",
    json_text="json_extract({col}, '$.{key}')",
    json_real="CAST(json_extract({col}, '$.{key}') AS REAL)",
)
POSTGRESQL = _Dialect(
    now="now()",
    epoch="CAST(EXTRACT(EPOCH FROM {x}) AS DOUBLE PRECISION)",
    floor_day="(floor(({x}) / 86400) * 86400)",
    from_epoch="to_timestamp({x})",
    hour="date_trunc('hour', {x}, 'UTC')",
    seconds="CAST(EXTRACT(EPOCH FROM ({b}) - ({a})) AS DOUBLE PRECISION)",
    greatest="GREATEST({a}, {b})",
    least="LEAST({a}, {b})",
    json_int="CAST(CAST({col} AS jsonb) ->> '{key}' AS INTEGER)",
    json_text="(CAST({col} AS jsonb) ->> '{key}')",
    json_real="CAST(CAST({col} AS jsonb) ->> '{key}' AS DOUBLE PRECISION)",
)


def daily_availability(d: _Dialect) -> str:
    """Per site, host and UTC day: up, down and unknown seconds, and up / known.

    The rules of qwatch/timeline.py: a run is up from first_seen to ended_at (an open run
    to now, or to last_seen once the daemon stopped refreshing it); time before the host's
    first sighting, after the daemon stopped watching and inside Redis gaps is unknown.
    Runs are merged into islands first, so runs that overlap count once. Every time is
    turned into epoch seconds once, up front: the arithmetic below is on numbers.
    """
    e = d.epoch
    return f"""
WITH RECURSIVE
clock AS (SELECT {d.now_epoch} AS now_e),
lives AS (
  SELECT c.site, c.host, {e("c.first_seen")} AS up_from, {e("c.last_seen")} AS seen,
    {e("c.ended_at")} AS ended, k.now_e
  FROM clusters c CROSS JOIN clock k
),
states AS (
  SELECT site, host, up_from,
    CASE WHEN ended IS NOT NULL THEN ended
         WHEN now_e - seen > {STALE_AFTER_S} THEN seen
         ELSE {d.greatest("now_e", "seen")} END AS up_to,
    CASE WHEN ended IS NULL AND now_e - seen > {STALE_AFTER_S} THEN 1 ELSE 0 END AS stale,
    CASE WHEN ended IS NULL AND now_e - seen <= {STALE_AFTER_S} THEN 1 ELSE 0 END AS live
  FROM lives
),
hosts AS (
  SELECT site, host, MIN(up_from) AS first_at, MAX(up_to) AS last_at,
    CASE WHEN MAX(stale) = 1 AND MAX(live) = 0 THEN MAX(up_to)
         ELSE (SELECT now_e FROM clock) END AS watched_to
  FROM states GROUP BY site, host
),
days (site, host, first_at, last_at, watched_to, day) AS (
  SELECT site, host, first_at, last_at, watched_to, {d.floor_day("first_at")} FROM hosts
  UNION ALL
  SELECT site, host, first_at, last_at, watched_to, day + 86400 FROM days
  WHERE day + 86400 < last_at
),
windows AS (
  SELECT w.site, w.host, w.day,
    {d.least("w.day + 86400", "k.now_e")} AS day_to,
    {d.greatest("w.day", "w.first_at")} AS w_from,
    {d.least(d.least("w.day + 86400", "w.watched_to"), "k.now_e")} AS w_to
  FROM days w CROSS JOIN clock k
),
ordered AS (
  SELECT site, host, up_from, up_to,
    MAX(up_to) OVER (PARTITION BY site, host ORDER BY up_from, up_to
                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
  FROM states
),
marked AS (
  SELECT site, host, up_from, up_to,
    SUM(CASE WHEN reach IS NULL OR up_from > reach THEN 1 ELSE 0 END)
      OVER (PARTITION BY site, host ORDER BY up_from, up_to ROWS UNBOUNDED PRECEDING) AS island
  FROM ordered
),
islands AS (
  SELECT site, host, MIN(up_from) AS up_from, MAX(up_to) AS up_to
  FROM marked GROUP BY site, host, island
),
island_days (site, host, up_from, up_to, day) AS (
  SELECT site, host, up_from, up_to, {d.floor_day("up_from")} FROM islands
  WHERE up_from < up_to
  UNION ALL
  SELECT site, host, up_from, up_to, day + 86400 FROM island_days WHERE day + 86400 < up_to
),
gap_spans AS (
  SELECT g.site, {e("g.started_at")} AS g_from,
    COALESCE({e("g.ended_at")}, k.now_e) AS g_to
  FROM gaps g CROSS JOIN clock k
),
gap_days (site, g_from, g_to, day) AS (
  SELECT site, g_from, g_to, {d.floor_day("g_from")} FROM gap_spans WHERE g_from < g_to
  UNION ALL
  SELECT site, g_from, g_to, day + 86400 FROM gap_days WHERE day + 86400 < g_to
),
-- One row of seconds per contribution, summed per day below: a single grouping rather
-- than joins between aggregates, whose row counts planners misjudge.
parts (site, host, day, range_s, window_s, up_s, gap_s, up_gap_s) AS (
  SELECT site, host, day, day_to - day,
    CASE WHEN w_from < w_to THEN w_to - w_from ELSE 0 END, 0, 0, 0
  FROM windows
  UNION ALL
  SELECT w.site, w.host, w.day, 0, 0,
    {d.least("i.up_to", "w.w_to")} - {d.greatest("i.up_from", "w.w_from")}, 0, 0
  FROM windows w JOIN island_days i ON i.site = w.site AND i.host = w.host AND i.day = w.day
  WHERE i.up_from < w.w_to AND i.up_to > w.w_from
  UNION ALL
  SELECT w.site, w.host, w.day, 0, 0, 0,
    {d.least("g.g_to", "w.w_to")} - {d.greatest("g.g_from", "w.w_from")}, 0
  FROM windows w JOIN gap_days g ON g.site = w.site AND g.day = w.day
  WHERE g.g_from < w.w_to AND g.g_to > w.w_from
  UNION ALL
  SELECT w.site, w.host, w.day, 0, 0, 0, 0,
    {d.least(d.least("i.up_to", "g.g_to"), "w.w_to")}
      - {d.greatest(d.greatest("i.up_from", "g.g_from"), "w.w_from")}
  FROM windows w
  JOIN island_days i ON i.site = w.site AND i.host = w.host AND i.day = w.day
  JOIN gap_days g ON g.site = w.site AND g.day = w.day
  WHERE i.up_from < w.w_to AND i.up_to > w.w_from
    AND g.g_from < w.w_to AND g.g_to > w.w_from
    AND i.up_from < g.g_to AND i.up_to > g.g_from
),
totals AS (
  SELECT site, host, day, SUM(range_s) AS range_s, SUM(window_s) - SUM(gap_s) AS known_s,
    SUM(up_s) - SUM(up_gap_s) AS up_s
  FROM parts GROUP BY site, host, day
)
SELECT site, host, {d.from_epoch("day")} AS day, up_s, known_s - up_s AS down_s,
  range_s - known_s AS unknown_s,
  CASE WHEN known_s > 0 THEN up_s / known_s END AS availability
FROM totals
"""


def hourly_reincarnations(d: _Dialect) -> str:
    """Workers reincarnated per cluster run and UTC hour, from the `reincarnated` events."""
    hour = d.hour("e.at")
    return f"""
SELECT c.site, c.host, c.cluster_id, {hour} AS hour,
  SUM({d.json_int("e.detail", "by")}) AS reincarnations,
  MAX({d.json_int("e.detail", "total")}) AS total
FROM events e JOIN clusters c ON c.id = e.cluster_pk
WHERE e.kind = 'reincarnated'
GROUP BY c.id, c.site, c.host, c.cluster_id, {hour}
"""


def restarts(d: _Dialect) -> str:
    """Each `restarted` event: the new run, the one it replaced and the downtime between
    the old run's last record and the new one's birth (by the clusters' own clocks)."""
    return f"""
SELECT c.site, c.host, e.at, c.cluster_id,
  {d.json_text("e.detail", "previous")} AS previous_cluster_id,
  {d.json_real("e.detail", "downtime_s")} AS downtime_s
FROM events e JOIN clusters c ON c.id = e.cluster_pk
WHERE e.kind = 'restarted'
"""


def hourly_backlog(_: _Dialect) -> str:
    """Per site and hour, from the hour rollups: the broker backlog (tasks queued in
    Redis, not yet taken by a cluster) and the clusters' own task queues."""
    return """
SELECT c.site, h.bucket AS hour, COUNT(*) AS clusters,
  SUM(CASE WHEN h.queued_avg IS NOT NULL THEN h.queued_avg * h.n END)
    / SUM(CASE WHEN h.queued_avg IS NOT NULL THEN h.n END) AS queued_avg,
  MAX(h.queued_max) AS queued_max,
  SUM(h.tq_avg) AS task_q_avg,
  MAX(h.tq_max) AS task_q_max
FROM rollup_hour h JOIN clusters c ON c.id = h.cluster_pk
GROUP BY c.site, h.bucket
"""


def cluster_runs(d: _Dialect) -> str:
    """Every cluster run with the time the daemon saw it up."""
    return f"""
SELECT site, host, cluster_id, pid, tob, first_seen, last_seen, ended_at, last_status,
  {d.seconds("first_seen", "COALESCE(ended_at, last_seen)")} AS seen_s
FROM clusters
"""


def redis_gaps(d: _Dialect) -> str:
    """Redis outages the daemon recorded; duration_s is NULL while one is still open."""
    return f"""
SELECT site, started_at, ended_at, {d.seconds("started_at", "ended_at")} AS duration_s, reason
FROM gaps
"""


VIEWS = {
    "daily_availability": daily_availability,
    "hourly_reincarnations": hourly_reincarnations,
    "restarts": restarts,
    "hourly_backlog": hourly_backlog,
    "cluster_runs": cluster_runs,
    "redis_gaps": redis_gaps,
}


def upgrade() -> None:
    # get_context, not get_bind: it also answers in offline (--sql) mode.
    dialect = POSTGRESQL if op.get_context().dialect.name == "postgresql" else SQLITE
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body(dialect)}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
