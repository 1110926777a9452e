"""The daemon's HTTP listener: /metrics, /healthz, /readyz and /api/clusters, on its own loop.

aiohttp, because the daemon is asyncio already: the server shares its event loop, so there
is no thread or process to keep in step, and a handler only ever reads the frozen View of
the last poll. Rendering a large View (thousands of clusters) runs in a worker thread so a
scrape cannot hold up the next poll. The bearer token is compared in constant time and is
never printed or logged (aiohttp's access log is off).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web

from qwatch import live
from qwatch.config import ListenAddress, Settings
from qwatch.errors import ConfigError
from qwatch.serve.metrics import CONTENT_TYPE, Renderer
from qwatch.serve.state import (
    ListenerState,
    Probe,
    Snapshot,
    View,
    liveness,
    qwatch_version,
    readiness,
)

log = logging.getLogger("qwatch.serve")

OPEN_PATHS = frozenset({"/healthz"})  # a liveness probe carries no token
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def clusters_json(view: View) -> str:
    """`qwatch status --json` of the last poll of each site this daemon samples."""
    return live.as_json([site.poll for site in view.sites if site.poll is not None])


def make_app(
    state: ListenerState, token: str | None, now: Callable[[], datetime] | None = None
) -> web.Application:
    clock = now or (lambda: datetime.now(UTC))
    expected = f"Bearer {token}".encode() if token else None
    render = Renderer()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.json_response(
                    {"error": "a bearer token is required"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="qwatch"'},
                )
        return await handler(request)

    async def metrics(_: web.Request) -> web.Response:
        captured = state.capture()  # on the loop: observe() cannot run meanwhile
        body = await asyncio.get_running_loop().run_in_executor(
            None, lambda: render(captured.view())
        )
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    def probe(answer: Probe) -> web.Response:
        return web.json_response(answer.body, status=answer.status)

    async def healthz(_: web.Request) -> web.Response:
        return probe(liveness(state.view(), clock()))

    async def readyz(_: web.Request) -> web.Response:
        return probe(readiness(state.view()))

    async def clusters(_: web.Request) -> web.Response:
        captured = state.capture()
        text = await asyncio.get_running_loop().run_in_executor(
            None, lambda: clusters_json(captured.view())
        )
        return web.Response(text=text, content_type="application/json")

    app = web.Application(middlewares=[require_token])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/clusters", clusters)
    return app


class Listener:
    """Started before the daemon's first poll, so a busy port stops it before anything runs."""

    def __init__(self, state: ListenerState, address: ListenAddress, token: str | None) -> None:
        self.address = address
        self._runner = web.AppRunner(make_app(state, token), access_log=None)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address.host, self.address.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            # asyncio's own strerror repeats the address; the errno's text says it once
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            raise ConfigError(f"listen: cannot listen on {self.address}: {reason}") from None
        log.info("serving /metrics, /healthz, /readyz, /api/clusters on http://%s", self.address)

    async def stop(self) -> None:
        await self._runner.cleanup()


def queue_limits(settings: Settings) -> dict[str, int]:
    """Each site's Django Q queue_limit: as configured, else Django Q's default, workers²."""
    limits = {}
    for site in settings.sites:
        limit = site.task_queue_limit
        if limit:
            limits[site.name] = limit
    return limits


async def start_listener(
    settings: Settings, interval_s: float
) -> tuple[Listener, Callable[[Snapshot], None]]:
    """The listener on `settings.listen`, started, and the hook the daemon calls per poll."""
    assert settings.listen is not None
    state = ListenerState(interval_s, qwatch_version(), queue_limits(settings))
    listener = Listener(state, settings.listen, settings.metrics_token)
    await listener.start()
    return listener, state.observe
