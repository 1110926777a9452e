"""Command line: parse arguments, build settings, call one function per command.

Every error qwatch means to raise is a `qwatch.errors.QwatchError`, caught once in `main`:
one line on stderr and its class's exit code (2 bad input, configuration or schema; 1 a
server unavailable). A traceback is a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from qwatch.config import Settings, load_settings, safe_url
from qwatch.errors import QwatchError, Unavailable
from qwatch.output import FORMATS

log = logging.getLogger("qwatch")
T = TypeVar("T")


def _settings_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (defaults < qwatch.toml < QWATCH_* < flags)")
    group.add_argument("--config", metavar="FILE", help="TOML file (default ./qwatch.toml)")
    group.add_argument(
        "--django-settings",
        metavar="MODULE",
        help="read SECRET_KEY, TIME_ZONE and Q_CLUSTER from this Django settings module",
    )
    group.add_argument("--redis", metavar="URL", help="redis://, rediss:// or unix:// URL")
    group.add_argument(
        "--db", metavar="URL", help="history database URL (sqlite:/// or postgresql://)"
    )
    group.add_argument("--name", help="Q_CLUSTER name of the site to watch")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level for messages on stderr (default INFO)",
    )


def _zone_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tz",
        metavar="ZONE",
        help="show times in UTC (default), local (this machine's zone) or an IANA zone "
        "like Europe/Paris; CSV and JSON stay UTC",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _range_options(parser: argparse.ArgumentParser, default: str) -> None:
    when = "a duration before now (90m, 2h, 7d) or an ISO time (UTC unless it says otherwise)"
    parser.add_argument("--since", metavar="TIME", help=f"{when}; default {default} ago")
    parser.add_argument("--until", metavar="TIME", help=f"{when}; default now")
    parser.add_argument("--format", choices=FORMATS, default="table")


def _foreign_tables_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-foreign-tables",
        action="store_true",
        help="let the first migration add qwatch's tables to a database holding others'",
    )


def settings_from(args: argparse.Namespace, *, database: bool = True) -> Settings:
    """The settings; `database=False` for a command that never opens the history database
    (its URL's scheme is checked, the rest is left to the commands that use it)."""
    return load_settings(
        config_path=args.config,
        django_settings=args.django_settings,
        redis_url=args.redis,
        database_url=args.db,
        name=args.name,
        display_time_zone=getattr(args, "tz", None),  # only the commands that print times
        listen=getattr(args, "listen", None),
        environ=os.environ,
        parse_database_url=database,
    )


def cmd_status(args: argparse.Namespace) -> int:
    # Imported here, as every command imports what it uses: `history` and `report` never
    # touch Redis, and start faster for not loading its client and the record decoder.
    from qwatch import live

    settings = settings_from(args, database=False)
    settings.require_secret()
    # One read, then exit: the cyclic collector would only walk the decoded records' objects
    # over and over (about a tenth of the read at 10,000 clusters) and find no cycles.
    gc.disable()
    print(asyncio.run(live.read_text(settings, as_json_text=args.json, pretty=args.pretty)))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """A Nagios plugin: exit 0-3 with one line, even for errors the other commands raise."""
    from qwatch import check, probe
    from qwatch.durations import parse_duration

    try:
        age = args.max_sample_age
        max_age = parse_duration(age).total_seconds() if age is not None else None
        limits = check.Thresholds(
            host=args.host,
            min_clusters=args.min_clusters,
            state_not=check.parse_states(args.state_not) if args.state_not else frozenset(),
            max_task_queue=args.max_task_queue,
            max_backlog=args.max_backlog,
            max_sample_age_s=max_age,
        )
        # Only --max-sample-age reads the history; without it, check opens no database.
        settings = settings_from(args, database=max_age is not None)
        settings.require_secret()
        verdict = asyncio.run(probe.run(settings, limits))
    except QwatchError as exc:
        verdict = check.unknown(str(exc))
    except ValueError as exc:  # parse_states
        verdict = check.unknown(f"--state-not: {exc}")
    print(verdict.line)
    return int(verdict.status)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


def cmd_daemon(args: argparse.Namespace) -> int:
    from qwatch.daemon import run_daemon

    settings = settings_from(args)
    overrides = {
        name: value
        for name, value in (("interval_s", args.interval), ("sample_every_s", args.sample_every))
        if value is not None
    }
    if overrides:
        settings = settings.with_daemon(**overrides)
    settings.require_secret()
    return _run_store(
        run_daemon(
            settings,
            once=args.once,
            migrate=not args.no_migrate,
            allow_foreign_tables=args.allow_foreign_tables,
        )
    )


def cmd_db(args: argparse.Namespace) -> int:
    from qwatch.store import migrate
    from qwatch.store.engine import create_engine

    url = settings_from(args).database_url

    async def run() -> str:
        engine = create_engine(url)
        try:
            if args.action == "upgrade":
                await migrate.upgrade(engine, allow_foreign_tables=args.allow_foreign_tables)
            revision = await migrate.current(engine)
            state = await migrate.check(engine)
        finally:
            await engine.dispose()
        return f"{safe_url(url)}: revision {revision or 'none'} ({state}; head {migrate.head()})"

    print(_run_store(run()))
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from qwatch.monitor.app import run_monitor

    settings = settings_from(args)
    settings.require_secret()
    return asyncio.run(run_monitor(settings))


def cmd_demo(args: argparse.Namespace) -> int:
    from qwatch import demo

    return asyncio.run(
        demo.run_demo(
            ui=not args.no_ui, duration_s=args.duration, restart_after_s=args.restart_after
        )
    )


def cmd_history(args: argparse.Namespace) -> int:
    from qwatch import history

    request = history.Request(
        ref=args.cluster,
        since=args.since,
        until=args.until,
        every=args.every,
        events_only=args.events,
        fmt=args.format,
        site=args.name,  # only when given: the default site name may not be the stored one
    )
    print(asyncio.run(history.run(settings_from(args), request)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from qwatch import reports

    if args.report is None:
        print(reports.listing())
        return 0
    settings = settings_from(args)
    print(asyncio.run(reports.run(settings, args.report, args.since, args.until, args.format)))
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from qwatch import alert_list

    print(asyncio.run(alert_list.run(settings_from(args), args.since, args.format)))
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    from qwatch import silencing

    settings = settings_from(args)
    if args.action == "add":
        new = silencing.NewSilence(args.rule, args.site, args.host, args.for_, args.reason)
        print(_run_store(silencing.add(settings, new)))
    elif args.action == "remove":
        print(_run_store(silencing.remove(settings, args.id)))
    else:
        print(asyncio.run(silencing.listing(settings, args.format)))
    return 0


def _run_store(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine that writes; a driver's error on the way becomes one line."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    try:
        return asyncio.run(coro)
    except (OperationalError, DBAPIError, OSError, TimeoutError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise Unavailable(f"history database unavailable: {reason}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwatch", description="Monitoring with history for Django Q clusters."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = commands.add_parser("status", help="print the live clusters once")
    status.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    status.add_argument("--pretty", action="store_true", help="indent the JSON for people")
    _zone_option(status)
    status.set_defaults(func=cmd_status)

    daemon = commands.add_parser("daemon", help="sample the live clusters into the history")
    daemon.add_argument("--interval", type=_seconds, help="seconds between polls (default 1)")
    daemon.add_argument(
        "--sample-every", type=_seconds, help="seconds between stored samples (default 10)"
    )
    daemon.add_argument("--once", action="store_true", help="take one poll, write it and exit")
    daemon.add_argument(
        "--no-migrate", action="store_true", help="refuse to start on an older schema"
    )
    _foreign_tables_option(daemon)
    daemon.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="serve /metrics, /healthz, /readyz, /api/clusters here (:PORT binds 127.0.0.1)",
    )
    daemon.set_defaults(func=cmd_daemon)

    check = commands.add_parser(
        "check",
        help="probe the live clusters once; Nagios exit codes (0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN)",
    )
    check.add_argument("--host", help="only the clusters on this host (default: every host)")
    check.add_argument(
        "--min-clusters", type=_count, metavar="N", help="CRITICAL below N live clusters"
    )
    check.add_argument(
        "--state-not",
        metavar="STATES",
        help="CRITICAL when a cluster is in one of these, e.g. Stopping,Stopped",
    )
    check.add_argument(
        "--max-task-queue",
        type=_count,
        metavar="N",
        help="WARNING when a cluster's queue is above N",
    )
    check.add_argument(
        "--max-backlog", type=_count, metavar="N", help="WARNING when the broker holds above N"
    )
    check.add_argument(
        "--max-sample-age",
        metavar="AGE",
        help="WARNING when the daemon's last poll in the history is older (e.g. 60s, 5m)",
    )
    check.set_defaults(func=cmd_check)

    db = commands.add_parser("db", help="the history database's schema")
    db.add_argument("action", choices=["upgrade", "current"])
    _foreign_tables_option(db)
    db.set_defaults(func=cmd_db)

    monitor = commands.add_parser("monitor", help="full-screen live table with history")
    _zone_option(monitor)
    monitor.set_defaults(func=cmd_monitor)

    history = commands.add_parser(
        "history", help="one cluster's or one host's history: buckets, events, availability"
    )
    history.add_argument(
        "cluster", help="cluster id, unique id prefix, qmonitor's 8-character suffix, or host"
    )
    _range_options(history, "24h")
    history.add_argument("--every", metavar="WIDTH", help="bucket width, e.g. 5m, 1h, 1d")
    history.add_argument("--events", action="store_true", help="list the events only")
    _zone_option(history)
    history.set_defaults(func=cmd_history)

    report = commands.add_parser("report", help="list the SQL report views, or run one")
    report.add_argument("report", nargs="?", help="the view to run (omit to list them)")
    _range_options(report, "7d")
    _zone_option(report)
    report.set_defaults(func=cmd_report)

    alerts = commands.add_parser("alerts", help="the alerts firing now, or since a time")
    alerts.add_argument(
        "--since", metavar="TIME", help="also those that ended since (7d, or an ISO time)"
    )
    alerts.add_argument("--format", choices=FORMATS, default="table")
    _zone_option(alerts)
    alerts.set_defaults(func=cmd_alerts)

    silence = commands.add_parser("silence", help="maintenance: send no alerts for a while")
    actions = silence.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="silence a rule (or all) on a site or host")
    add.add_argument("rule", help="a rule (cluster_down, stuck, …) or all")
    add.add_argument("--site", help="only this site (default every site)")
    add.add_argument("--host", help="only this host (default every host)")
    add.add_argument("--for", dest="for_", required=True, metavar="DURATION", help="e.g. 2h")
    add.add_argument("--reason", required=True, help="why: shown with the silence")
    listed = actions.add_parser("list", help="the silences in force")
    listed.add_argument("--format", choices=FORMATS, default="table")
    remove = actions.add_parser("remove", help="end a silence now")
    remove.add_argument("id", type=_count, help="its id (from `qwatch silence list`)")
    for action in (add, listed, remove):
        _zone_option(action)
        _settings_options(action)
    silence.set_defaults(func=cmd_silence)

    for sub in commands.choices.values():
        if sub is not silence:
            _settings_options(sub)

    # Added after the settings options: the demo makes its own Redis, sites and database.
    demo = commands.add_parser("demo", help="start a throwaway Redis, clusters, daemon, monitor")
    demo.add_argument("--no-ui", action="store_true", help="no monitor: log what happens")
    demo.add_argument("--duration", type=_seconds, metavar="S", help="stop after S seconds")
    demo.add_argument(
        "--restart-after",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="restart one cluster after S seconds (default 60)",
    )
    levels = ["DEBUG", "INFO", "WARNING", "ERROR"]
    demo.add_argument("--log-level", default="WARNING", choices=levels)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.log_level != "DEBUG":
        # Their INFO lines (every connection, every migration step) drown out qwatch's own.
        for noisy in ("asyncio_redis", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except QwatchError as exc:
        print(f"qwatch: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
