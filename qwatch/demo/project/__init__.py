"""The Django project `qwatch demo` runs its clusters in: settings, tasks and a task feeder.

It ships inside the package so the demo works from an installed wheel; everything that
varies per run (Redis port, site name, database file, secret key) comes from the
environment `qwatch.demo` sets for each child process.
"""
