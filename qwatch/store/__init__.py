"""qwatch's history store: tables, engine from URL, migrations from code, batched writer,
rollups and retention.

Submodules, one job each: `models` (tables), `engine` (AsyncEngine from a URL), `migrate`
(Alembic from code), `writer` (the daemon's buffered writes), `maintenance` (hour rollups,
retention). Import what you need from them; this package imports nothing eagerly, so
`migrations/env.py` can load the models without the rest.
"""
