"""`qwatch demo` started and stopped for real, leaving no process or file behind.

Without a screen (`--no-ui`, ended by `--duration` or by SIGINT), and with its monitor on
a pseudo-terminal, quit with `q`.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.slow

DEMO = [sys.executable, "-m", "qwatch", "demo"]


def started_pids(output: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in re.findall(r"started (.+?) \(pid (\d+)\)", output)}


def workdir_of(output: str) -> Path:
    match = re.search(r"working in (\S+)", output)
    assert match, output
    return Path(match.group(1))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone in all but name; only the demo could reap it, and it has exited.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line names `text` (the demo's temp dir): its children's do."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_all_gone(output: str) -> None:
    pids = started_pids(output)
    assert {"qcluster orders", "qcluster emails", "feeder orders", "feeder emails"} <= set(pids)
    assert any(name.startswith("redis-server on port") for name in pids)
    for name, pid in pids.items():
        assert not alive(pid), f"{name} (pid {pid}) is still running"
        assert f"stopped {name} (pid {pid})" in output or name == "qcluster orders"
    workdir = workdir_of(output)
    assert not workdir.exists(), f"{workdir} was left behind"
    assert f"removed {workdir}" in output
    assert not processes_mentioning(str(workdir))


def test_no_ui_demo_shows_reincarnations_and_a_restart_then_cleans_up() -> None:
    result = subprocess.run(
        [*DEMO, "--no-ui", "--duration", "35", "--restart-after", "10"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "restarting qcluster orders" in output
    # The orders cluster ran twice: both runs were started and stopped by pid.
    assert len(re.findall(r"started qcluster orders \(pid \d+\)", output)) == 2
    summary = re.search(r"history: (\d+) samples; events: (.*)", output)
    assert summary, output
    events = dict((kind, int(n)) for kind, n in re.findall(r"(\w+) (\d+)", summary.group(2)))
    assert int(summary.group(1)) > 10
    assert events.get("restarted") == 1, output
    assert events.get("reincarnated", 0) >= 1, output
    assert events.get("appeared") == 3  # orders twice, emails once
    assert_all_gone(output)


def test_sigint_stops_a_no_ui_demo_and_everything_it_started() -> None:
    process = subprocess.Popen(
        [*DEMO, "--no-ui", "--log-level", "INFO"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    sampling: set[str] = set()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            # The daemon's log says when it samples a site: it is, for both, by then.
            sampling.update(re.findall(r"sampling site '(\w+)'", line))
            if sampling == {"orders", "emails"}:
                break
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    assert_all_gone(output)


def test_missing_redis_server_is_one_clear_line() -> None:
    env = {**os.environ, "PATH": "/nonexistent"}
    result = subprocess.run([*DEMO, "--no-ui"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "qwatch: the demo needs redis-server on PATH "
        "(Debian/Ubuntu: apt install redis-server; macOS: brew install redis)"
    ]
    assert "working in" not in result.stdout


def test_demo_monitor_on_a_terminal_quits_with_q_and_cleans_up() -> None:
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    process = subprocess.Popen(
        [*DEMO, "--duration", "120"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    seen = bytearray()

    def read_some() -> bytes:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if not ready:
            return b""
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the other side closed: the demo has exited
            return b""
        seen.extend(chunk)
        return chunk

    def read_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
        def done() -> bool:
            read_some()
            return predicate()

        wait_for(done, timeout, what, step=0)

    try:
        # The monitor's screen, with both sites' clusters and the history pane.
        read_until(lambda: b"History of" in seen and b"emails" in seen, 90, "the screen")
        read_until(lambda: seen.count(b"Idle") + seen.count(b"Working") > 2, 60, "rows")
        os.write(leader, b"q")
        read_until(lambda: process.poll() is not None, 60, "the demo to exit")
        while read_some():
            pass
    finally:
        if process.poll() is None:
            # SIGTERM lets the demo stop what it started; SIGKILL would orphan it all.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        os.close(leader)
    output = seen.decode(errors="replace")
    assert process.returncode == 0, output[-2000:]
    assert "\x1b[?1049l" in output  # left the alternate screen: the terminal is given back
    assert_all_gone(output.split("\x1b[?1049l")[-1] + output.split("\x1b[?1049h")[0])
