"""`qwatch alerts` through the command line, on a real SQLite history."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from qwatch.alerts.rules import Alert
from qwatch.store.engine import create_engine
from qwatch.store.writer import Batch, Writer
from tests.test_silencing import db, run

__all__ = ["db"]  # the fixture, shared


def test_a_bad_since_is_one_line_exit_2(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "alerts", "--since", "yesterday", "--db", db)
    assert status == 2 and out == "" and err.count("\n") == 1 and "'yesterday'" in err


def test_alerts_firing_now_and_since(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    down = Alert(
        "cluster_down", "shop", "web1", "critical", "shop: no live cluster on web1 for 1m",
        now - timedelta(hours=1), host="web1", details={"held_s": 60.0},
    )  # fmt: skip
    old = Alert(
        "stuck", "shop", "", "critical", "shop: backlog stuck",
        now - timedelta(days=2), ended_at=now - timedelta(days=1),
    )  # fmt: skip

    async def write() -> None:
        engine = create_engine(db)
        writer = Writer(engine)
        writer.submit(Batch("shop", now, alerts_fired=[down, old], alerts_resolved=[old]))
        writer.submit(Batch("shop", now, notified=[(down, "firing", now)]))
        await writer.flush()
        await engine.dispose()

    asyncio.run(write())
    status, out, _ = run(capsys, "alerts", "--db", db)
    assert status == 0
    header, row, summary = out.splitlines()
    assert header.split() == [
        "rule", "site", "subject", "severity", "started", "(UTC)", "resolved", "(UTC)",
        "lasted", "notified",
    ]  # fmt: skip
    assert row.split()[:4] == ["cluster_down", "shop", "web1", "critical"]
    resolved, lasted, notified = row.split()[-3:]
    assert (resolved, notified) == ("firing", "firing")
    assert lasted in ("1h", "1h1s", "1h2s")  # the command's clock has moved on a little
    assert summary.strip() == down.summary
    status, out, _ = run(capsys, "alerts", "--since", "7d", "--format", "json", "--db", db)
    rows = json.loads(out)
    assert [(r["rule"], r["resolved_at"] is None) for r in rows] == [
        ("stuck", False),
        ("cluster_down", True),
    ]
    assert rows[1]["details"] == {"held_s": 60.0} and rows[1]["silenced"] is False
    status, out, _ = run(capsys, "alerts", "--format", "csv", "--db", db)
    assert out.splitlines()[0].startswith("rule,site,subject,host,cluster_id,severity,summary")
    assert len(out.splitlines()) == 2
