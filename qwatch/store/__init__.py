"""qwatch's history store: tables, engine from URL, migrations from code, batched writer,
rollups and retention, and every SQL read.

Submodules, one job each: `models` (tables), `engine` (AsyncEngine from a URL), `migrate`
(Alembic from code), `writer` (the daemon's buffered writes), `maintenance` (hour rollups,
retention), `reads` (every read: history, report, monitor, the daemon's resume),
`rollups` (the rollup merge as SQL, from `qwatch.rollup.MERGE_RULES`), `dialect` (all that
differs between SQLite and PostgreSQL). Import what you need from them; this package
imports nothing eagerly, so `migrations/env.py` can load the models without the rest.
"""
