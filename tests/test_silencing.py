"""`qwatch silence add|list|remove` through the command line, on a real SQLite history."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from qwatch import cli
from qwatch.store import migrate
from qwatch.store.engine import create_engine


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    for name in ("QWATCH_REDIS_URL", "QWATCH_NAME", "QWATCH_DATABASE_URL", "QWATCH_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)

    async def make() -> None:
        engine = create_engine(url)
        await migrate.upgrade(engine)
        await engine.dispose()

    asyncio.run(make())
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_silences_added_listed_and_removed(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys, "silence", "add", "cluster_down", "--host", "web1", "--for", "2h",
        "--reason", "kernel upgrade", "--db", db,
    )  # fmt: skip
    assert status == 0 and out.startswith("silence 1: cluster_down host web1 until ")
    status, out, _ = run(capsys, "silence", "list", "--format", "json", "--db", db)
    [listed] = json.loads(out)
    assert (listed["id"], listed["rule"], listed["site"], listed["host"]) == (
        1,
        "cluster_down",
        None,
        "web1",
    )
    until = datetime.fromisoformat(listed["until"])
    assert timedelta(hours=1, minutes=59) < until - datetime.now(UTC) <= timedelta(hours=2)
    assert run(capsys, "silence", "remove", "1", "--db", db)[:2] == (0, "removed silence 1\n")
    assert run(capsys, "silence", "list", "--db", db)[1] == "no silence in force\n"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("silence", "add", "cluster_gone", "--for", "2h", "--reason", "x"), "unknown rule"),
        (("silence", "add", "all", "--for", "2x", "--reason", "x"), "'2x'"),
        (("silence", "add", "all", "--for", "2h", "--reason", " "), "--reason"),
        (("silence", "remove", "7"), "no silence 7"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    db: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    status, out, err = run(capsys, *argv, "--db", db)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and says in err
