"""The child processes `qwatch demo` starts: spawned in sessions of their own, stopped by pid.

A session of its own means a terminal's Ctrl-C reaches only the demo, which then stops its
children in order; the child's pid is also its process group, so a worker a qcluster left
behind goes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("qwatch.demo")

# A demo cluster finishes the tasks in hand (naps under 2 s) within its Django Q timeout of
# 10 s; but when a `die` task takes its last worker mid-stop, Django Q waits forever.
STOP_TIMEOUT_S = 12.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to the main process (a qcluster stops its own workers in order), then
        SIGKILL to the whole group if it is slow, and for any worker it left behind."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await self.process.wait()
            except TimeoutError:
                # Expected now and then (see STOP_TIMEOUT_S): not worth a warning.
                log.info(
                    "%s (pid %d) still stopping after %.0f s: killed", self.name, self.pid, timeout
                )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.process.returncode is None:
            await self.process.wait()


async def spawn(
    name: str, args: list[str], cwd: Path, log_path: Path, env: dict[str, str] | None
) -> Child:
    """Start `args` with its output in `log_path` (nothing on the demo's terminal)."""
    with log_path.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(name, process)


async def answers_ping(child: Child, port: int, timeout: float) -> bool:
    """Whether the redis-server `child` answers PING on `port` within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and child.process.returncode is None:
        try:
            async with asyncio.timeout(1.0):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"PING\r\n")
                reply = await reader.readline()
                writer.close()
                await writer.wait_closed()
            if reply.startswith(b"+PONG"):
                return True
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.05)
    return False
