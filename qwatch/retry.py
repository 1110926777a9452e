"""How long to wait before trying a failing server again: one capped exponential backoff.

Used by the daemon (each Redis, the history database) and the monitor (each Redis), so
every retry in qwatch slows down the same way. Pure.
"""

from __future__ import annotations

# 2**60 times any interval is past every cap; a bigger power would overflow a float in a
# long outage (after about a thousand failures).
_MAX_DOUBLINGS = 60


def backoff(failures: int, base_s: float, cap_s: float) -> float:
    """The wait after `failures` failures in a row: `base_s` (the normal cadence) after none,
    `base_s` after the first, then doubling with each failure, never over `cap_s`."""
    if failures <= 0:
        return base_s
    return min(cap_s, base_s * 2.0 ** min(failures - 1, _MAX_DOUBLINGS))
