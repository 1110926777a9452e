"""Tasks the demo feeds its clusters."""

import os
import time


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def die() -> None:
    # The worker dies mid-task; the cluster's sentinel starts another (a reincarnation).
    os._exit(3)
