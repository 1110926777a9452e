"""Feeds one demo cluster a stream of tasks, in waves, until it is stopped.

Busy stretches outrun the workers, so the task queue fills (and TQ turns green at the
queue limit) and then drains; every so often a task kills its worker.

Run as `python -m qwatch.demo.project.feeder` with the demo's environment.
"""

import os
import random
import time

import django

BUSY_S = 15.0  # tasks come fast for this long,
QUIET_S = 25.0  # then slowly for this long
BUSY_PER_S = 4.0
QUIET_PER_S = 1.0
DIE_EVERY = 15  # one task in this many kills its worker


def main() -> None:
    django.setup()
    from django_q.tasks import async_task

    rng = random.Random()
    # Sites start their waves apart, so the two sparklines do not move in step.
    offset = float(os.environ.get("QWATCH_DEMO_PHASE_S", "0"))
    started = time.monotonic() - offset
    sent = 0
    while True:
        sent += 1
        if sent % DIE_EVERY == 0:
            async_task("qwatch.demo.project.tasks.die")
        else:
            async_task("qwatch.demo.project.tasks.nap", round(rng.uniform(0.2, 1.4), 2))
        busy = (time.monotonic() - started) % (BUSY_S + QUIET_S) < BUSY_S
        time.sleep(1.0 / (BUSY_PER_S if busy else QUIET_PER_S))


if __name__ == "__main__":
    main()
