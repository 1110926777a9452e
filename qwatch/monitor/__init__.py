"""`qwatch monitor`: a full-screen live table of a site's clusters, with history beside it.

One job per module: `records` (what the sources deliver), `spark` and `state` (pure view
state), `pane` (pure history-pane arithmetic), `render` (state -> styled text), `layout`,
`keys`, `reads` (the SQL it runs, read-only), `refresh` (background tasks for Redis and
SQL) and `app` (the Application and its lifetime).
"""
