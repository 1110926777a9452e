"""The demo: qwatch at work in one command, on a machine with nothing set up.

It starts, in a temporary directory: a throwaway redis-server on a free port, two real
django-q2 clusters (two sites) each fed a stream of tasks (some kill their worker, so
reincarnations show), the daemon in this process writing a SQLite history, and the monitor.
After a minute it restarts one cluster, so a restart shows. Leaving stops everything it
started, by pid, and removes the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qwatch.config import DaemonSettings, RedisSettings, Settings, Site
from qwatch.demo.processes import Child, answers_ping, free_port, spawn
from qwatch.errors import Unavailable

log = logging.getLogger("qwatch.demo")

SETTINGS_MODULE = "qwatch.demo.project.settings"
FEEDER_MODULE = "qwatch.demo.project.feeder"
REDIS_START_TIMEOUT_S = 10.0
MIGRATE_TIMEOUT_S = 120.0
# Leaving the demo: its history is about to be deleted, so a clean stop matters less than
# giving the terminal back soon.
CLOSE_TIMEOUT_S = 5.0
DAEMON_STOP_TIMEOUT_S = 10.0
RESTART_AFTER_S = 60.0
STAT_EXPIRY_S = 3.5  # Django Q's Stat records expire 3 s after their last write


@dataclass(frozen=True)
class DemoSite:
    name: str
    workers: int
    queue_limit: int
    phase_s: float  # where in its wave of tasks the feeder starts


SITES = (DemoSite("orders", 2, 4, 0.0), DemoSite("emails", 3, 6, 20.0))


class DemoUnavailable(Unavailable):
    """Something the demo needs is missing; the message says how to get it."""


def check_requirements() -> str:
    """The redis-server path; raises DemoUnavailable naming what is missing."""
    server = shutil.which("redis-server")
    if server is None:
        raise DemoUnavailable(
            "the demo needs redis-server on PATH "
            "(Debian/Ubuntu: apt install redis-server; macOS: brew install redis)"
        )
    missing = [name for name in ("django_q", "redis") if importlib.util.find_spec(name) is None]
    if missing:
        raise DemoUnavailable(
            "the demo needs django-q2 and redis-py (missing: "
            f"{', '.join(missing)}): pip install 'qwatch[demo]'"
        )
    return server


class Demo:
    """The demo's processes and files; `close()` undoes all of it."""

    def __init__(self, workdir: Path, redis_server: str, say: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.redis_server = redis_server
        self.say = say
        self.secret_key = secrets.token_urlsafe(40)
        self.port = 0
        self.redis: Child | None = None
        self.clusters: dict[str, Child] = {}
        self.feeders: dict[str, Child] = {}

    # --- settings --------------------------------------------------------------------------

    @property
    def history_url(self) -> str:
        return f"sqlite:///{self.workdir / 'history.sqlite3'}"

    def settings(self) -> Settings:
        redis = RedisSettings(host="127.0.0.1", port=self.port)
        sites = tuple(
            Site(
                name=s.name,
                secret_key=self.secret_key,
                redis=redis,
                workers=s.workers,
                queue_limit=s.queue_limit,
            )
            for s in SITES
        )
        # Samples every 2 s rather than 10: a demo lasts minutes, not days.
        daemon = DaemonSettings(interval_s=1.0, sample_every_s=2.0)
        return Settings(sites=sites, database_url=self.history_url, daemon=daemon)

    def _env(self, site: DemoSite) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QWATCH_", "DJANGO_"))}
        env.update(
            DJANGO_SETTINGS_MODULE=SETTINGS_MODULE,
            QWATCH_DEMO_SECRET_KEY=self.secret_key,
            QWATCH_DEMO_DB=str(self.workdir / f"django-{site.name}.sqlite3"),
            QWATCH_DEMO_SITE=site.name,
            QWATCH_DEMO_WORKERS=str(site.workers),
            QWATCH_DEMO_QUEUE_LIMIT=str(site.queue_limit),
            QWATCH_DEMO_REDIS=f"redis://127.0.0.1:{self.port}/0",
            QWATCH_DEMO_PHASE_S=str(site.phase_s),
            PYTHONUNBUFFERED="1",
        )
        return env

    # --- starting ----------------------------------------------------------------------------

    async def _spawn(
        self, name: str, args: list[str], log_name: str, env: dict[str, str] | None
    ) -> Child:
        child = await spawn(name, args, self.workdir, self.workdir / log_name, env)
        self.say(f"started {name} (pid {child.pid})")
        return child

    async def start_redis(self) -> None:
        for attempt in range(3):  # a free port can be taken before redis binds it
            self.port = free_port()
            args = [
                self.redis_server,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
            ]  # fmt: skip
            self.redis = await self._spawn(
                f"redis-server on port {self.port}", args, "redis.log", None
            )
            if await answers_ping(self.redis, self.port, REDIS_START_TIMEOUT_S):
                return
            await self.redis.stop(timeout=2)
            self.redis = None
            if attempt == 2:
                tail = (self.workdir / "redis.log").read_text(errors="replace")[-500:]
                raise DemoUnavailable(f"redis-server did not start:\n{tail}")

    async def prepare_django(self) -> None:
        """Migrate one Django database and copy it per site (migrating takes seconds)."""
        self.say("preparing the demo's Django databases (django-q2 migrations)…")
        first = SITES[0]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0",
            cwd=self.workdir,
            env=self._env(first),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            async with asyncio.timeout(MIGRATE_TIMEOUT_S):
                output, _ = await process.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            text = output.decode(errors="replace").strip().splitlines()[-5:]
            raise DemoUnavailable(
                "migrating the demo's Django database failed:\n" + "\n".join(text)
            )
        source = self.workdir / f"django-{first.name}.sqlite3"
        for site in SITES[1:]:
            shutil.copy(source, self.workdir / f"django-{site.name}.sqlite3")

    async def start_cluster(self, site: DemoSite) -> None:
        args = [sys.executable, "-m", "django", "qcluster"]
        log_name = f"{site.name}-qcluster.log"
        self.clusters[site.name] = await self._spawn(
            f"qcluster {site.name}", args, log_name, self._env(site)
        )

    async def start_feeder(self, site: DemoSite) -> None:
        args = [sys.executable, "-m", FEEDER_MODULE]
        log_name = f"{site.name}-feeder.log"
        self.feeders[site.name] = await self._spawn(
            f"feeder {site.name}", args, log_name, self._env(site)
        )

    async def start(self) -> None:
        await self.start_redis()
        await self.prepare_django()
        for site in SITES:
            await self.start_cluster(site)
            await self.start_feeder(site)

    async def restart_later(self, after_s: float) -> None:
        """After `after_s`, stop the first site's cluster and start it again."""
        await asyncio.sleep(after_s)
        site = SITES[0]
        self.say(f"restarting qcluster {site.name}, so a restart shows in the history")
        await self.clusters[site.name].stop()
        # Django Q's last record lingers until it expires; a successor seen beside it would
        # not be taken for its restart.
        await asyncio.sleep(STAT_EXPIRY_S)
        await self.start_cluster(site)

    # --- stopping ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Feeders, then clusters (so the daemon sees them stop), then Redis; by pid."""
        for group in (self.feeders, self.clusters):
            children = list(group.values())
            group.clear()
            stops = (child.stop(CLOSE_TIMEOUT_S) for child in children)
            await asyncio.gather(*stops, return_exceptions=True)
            for child in children:
                self.say(f"stopped {child.name} (pid {child.pid})")

    async def close_redis(self) -> None:
        if self.redis is not None:
            redis, self.redis = self.redis, None
            await redis.stop(timeout=5)
            self.say(f"stopped {redis.name} (pid {redis.pid})")

    def summary(self) -> str:
        """What the history recorded (read with sqlite3, before the directory goes)."""
        path = self.workdir / "history.sqlite3"
        if not path.is_file():
            return "history: none recorded"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            try:
                samples = db.execute("SELECT count(*) FROM samples").fetchone()[0]
                kinds = dict(
                    db.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall()
                )
            except sqlite3.Error as exc:
                return f"history: unreadable ({exc})"
        events = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) or "none"
        return f"history: {samples} samples; events: {events}"


async def run_demo(
    *,
    ui: bool = True,
    duration_s: float | None = None,
    restart_after_s: float = RESTART_AFTER_S,
    say: Callable[[str], None] | None = None,
) -> int:
    """Run the demo until the monitor is left (or `duration_s` passes, or SIGINT/SIGTERM)."""
    from qwatch.daemon import run_daemon

    redis_server = check_requirements()
    say = say or (lambda text: print(f"qwatch demo: {text}", flush=True))
    workdir = Path(tempfile.mkdtemp(prefix="qwatch-demo-"))
    say(f"working in {workdir}")
    demo = Demo(workdir, redis_server, say)
    stop = asyncio.Event()
    daemon: asyncio.Task[int] | None = None
    restart: asyncio.Task[None] | None = None
    try:
        await demo.start()
        settings = demo.settings()
        daemon = asyncio.create_task(run_daemon(settings, stop=stop))
        restart = asyncio.create_task(demo.restart_later(restart_after_s))
        if ui:
            # Lines printed over the full screen would garble it: hush until it is gone.
            demo.say = lambda text: log.info("%s", text)
            try:
                await _monitor(settings, duration_s)
            finally:
                demo.say = say
        else:
            await _wait(stop, duration_s, daemon)
    finally:
        if restart is not None:
            restart.cancel()
            await asyncio.gather(restart, return_exceptions=True)
        await demo.close()
        stop.set()
        if daemon is not None:
            await _finish(daemon)
        await demo.close_redis()
        say(demo.summary())
        shutil.rmtree(workdir, ignore_errors=True)
        say(f"removed {workdir}")
    return 0


async def _monitor(settings: Settings, duration_s: float | None) -> None:
    from qwatch.monitor.app import create_monitor, logs_held

    monitor = create_monitor(settings, range_label="15m")
    timer = None
    if duration_s is not None:
        timer = asyncio.get_running_loop().call_later(duration_s, monitor.quit)
    try:
        with logs_held():
            await monitor.run()
    finally:
        if timer is not None:
            timer.cancel()


async def _wait(stop: asyncio.Event, duration_s: float | None, daemon: asyncio.Task[int]) -> None:
    """Without a screen: until the duration passes, a signal comes, or the daemon ends."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait(
            {waiter, daemon}, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        waiter.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _finish(daemon: asyncio.Task[int]) -> None:
    try:
        async with asyncio.timeout(DAEMON_STOP_TIMEOUT_S):
            await daemon
    except TimeoutError:
        log.warning("the demo's daemon did not stop in %.0f s", DAEMON_STOP_TIMEOUT_S)
    except Exception:
        log.exception("the demo's daemon failed")
