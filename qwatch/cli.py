"""Command line: parse arguments, build settings, call one function per command.

Errors a user can fix are one line on stderr: exit 2 for bad input or configuration,
exit 1 when a server cannot be reached. A traceback is a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence

from qwatch.config import ConfigError, Settings, load_settings
from qwatch.redis_source import RedisUnavailable

log = logging.getLogger("qwatch")


class UsageError(Exception):
    """Bad input on the command line (exit 2)."""


class Unavailable(Exception):
    """A server qwatch needs cannot be reached (exit 1)."""


def _settings_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (defaults < qwatch.toml < QWATCH_* < flags)")
    group.add_argument("--config", metavar="FILE", help="TOML file (default ./qwatch.toml)")
    group.add_argument(
        "--django-settings",
        metavar="MODULE",
        help="read SECRET_KEY, TIME_ZONE and Q_CLUSTER from this Django settings module",
    )
    group.add_argument("--redis", metavar="URL", help="redis://, rediss:// or unix:// URL")
    group.add_argument("--db", metavar="URL", help="history database URL (sqlite:/// or postgresql://)")
    group.add_argument("--name", help="Q_CLUSTER name of the site to watch")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level for messages on stderr (default INFO)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(
        config_path=args.config,
        django_settings=args.django_settings,
        redis_url=args.redis,
        database_url=args.db,
        name=args.name,
        environ=os.environ,
    )


def cmd_status(args: argparse.Namespace) -> int:
    from qwatch import live

    settings = settings_from(args)
    settings.require_secret()
    polls = asyncio.run(live.read_all(settings))
    print(live.as_json(polls) if args.json else live.as_table(polls))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwatch", description="Monitoring with history for Django Q clusters."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = commands.add_parser("status", help="print the live clusters once")
    status.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    status.set_defaults(func=cmd_status)

    for sub in commands.choices.values():
        _settings_options(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ConfigError, UsageError) as exc:
        print(f"qwatch: {exc}", file=sys.stderr)
        return 2
    except (RedisUnavailable, Unavailable) as exc:
        print(f"qwatch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
