"""`qwatch demo`: a throwaway Redis, two real django-q2 clusters, the daemon and the monitor.

run.py        the demo itself: start, watch, restart one cluster, stop and clean up
processes.py  the child processes it starts, each in its own session, stopped by pid
project/      the Django project the demo's clusters run (settings, tasks, feeder)
"""

from __future__ import annotations

from qwatch.demo.run import DemoUnavailable, run_demo

__all__ = ["DemoUnavailable", "run_demo"]
