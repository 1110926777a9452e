"""The alert rules' names and their knobs (`Threshold`, `DEFAULTS`, `TAKES`), apart from the
rules themselves: the settings read [alerts.rules.NAME] with these on every command, and
`qwatch status` must not pay for importing the rule engine (qwatch.alerts.rules) and the
event detector it needs, which only the daemon runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

CLUSTER_DOWN = "cluster_down"
RESTART_LOOP = "restart_loop"
REINCARNATION_STORM = "reincarnation_storm"
STUCK = "stuck"
QUEUE_FULL = "queue_full"
REDIS_UNREACHABLE = "redis_unreachable"
RULES = (CLUSTER_DOWN, RESTART_LOOP, REINCARNATION_STORM, STUCK, QUEUE_FULL, REDIS_UNREACHABLE)


@dataclass(frozen=True, slots=True)
class Threshold:
    """One rule's knobs. `for_s` applies to the duration rules, `count`/`window_s` to the
    counting ones (`TAKES` says which); a rule ignores the others."""

    enabled: bool = True
    for_s: float = 0.0
    count: int = 1
    window_s: float = 0.0


DEFAULTS: Mapping[str, Threshold] = MappingProxyType(
    {
        CLUSTER_DOWN: Threshold(for_s=60),
        RESTART_LOOP: Threshold(count=3, window_s=15 * 60),
        REINCARNATION_STORM: Threshold(count=10, window_s=10 * 60),
        STUCK: Threshold(for_s=10 * 60),
        QUEUE_FULL: Threshold(for_s=5 * 60),
        REDIS_UNREACHABLE: Threshold(for_s=30),
    }
)
# The settings each rule takes, as written in [alerts.rules.NAME].
TAKES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        rule: ("count", "window") if rule in (RESTART_LOOP, REINCARNATION_STORM) else ("for",)
        for rule in RULES
    }
)
