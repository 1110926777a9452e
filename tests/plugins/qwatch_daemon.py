"""`qwatch daemon` as a real process: the way users run it, signals and all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from qwatch.store.engine import create_engine
from tests.helpers import wait_for
from tests.plugins.qcluster import SECRET_KEY


@dataclass
class DaemonProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 20.0) -> None:
        wait_for(lambda: needle in self.log, timeout, f"{needle!r} in the daemon log")

    def terminate(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def qwatch_env(name: str | None, redis_url: str | None, db_url: str) -> dict[str, str]:
    """The environment of a qwatch process; without a name and Redis (several sites in a
    --config file), the file says them, and the secret key, per site."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWATCH_")}
    env.update(QWATCH_DATABASE_URL=db_url)
    if name is not None and redis_url is not None:
        env.update(QWATCH_SECRET_KEY=SECRET_KEY, QWATCH_NAME=name, QWATCH_REDIS_URL=redis_url)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def run_qwatch(
    *args: str, name: str | None, redis_url: str | None, db_url: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qwatch", *args],
        env=qwatch_env(name, redis_url, db_url),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def query(db_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of one SQL statement, read as a user would (a fresh connection each time)."""

    async def run() -> list[tuple[Any, ...]]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as conn:
                return [tuple(row) for row in (await conn.execute(text(sql), params)).all()]
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture
def daemon_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(
        *,
        name: str | None = None,
        redis_url: str | None = None,
        db_url: str,
        interval: float = 0.5,
        sample_every: float = 1.0,
        config: Path | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> DaemonProcess:
        """A daemon on one site (name, redis_url), or on the sites of a `config` file."""
        log_path = tmp_path_factory.mktemp("daemon") / "daemon.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "qwatch",
                    "daemon",
                    "--interval",
                    str(interval),
                    "--sample-every",
                    str(sample_every),
                    *(["--config", str(config)] if config else []),
                    *args,
                ],
                env={**qwatch_env(name, redis_url, db_url), **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        daemon = DaemonProcess(process, log_path)
        started.append(daemon)
        daemon.wait_log("qwatch daemon:")  # the schema is migrated by then
        return daemon

    yield start
    for daemon in started:
        daemon.kill()
