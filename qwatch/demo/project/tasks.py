"""Tasks the demo feeds its clusters."""

import os
import time


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def die() -> None:
    # The worker dies mid-task; the cluster's sentinel starts another (a reincarnation).
    # First a moment for the worker's queue thread to finish sending its last result: dying
    # while it holds the result pipe's lock would leave every other worker's results stuck
    # (RQ only grows) and the cluster unable to stop.
    time.sleep(0.5)
    os._exit(3)
