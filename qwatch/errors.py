"""Every error qwatch raises on purpose, as one tree (`cli.main` catches the root once).

    QwatchError                 a one-line message, safe to print: never a secret
    ├── UserError        exit 2 bad input, configuration or schema: the user can fix it
    │   ├── ConfigError         a setting (names the setting, never its value)
    │   ├── SchemaError         the history's schema does not fit this qwatch
    │   └── …                   DurationError, PlanError, BadInput, BadReport, BadReference
    ├── Unavailable      exit 1 a server qwatch needs cannot be reached or used
    │   ├── SourceUnavailable   a site's Stats cannot be read: RedisUnavailable, a cache's
    │   └── …                   StoreUnavailable, NotReadable, DemoUnavailable
    └── DecodeError             one record refused: counted and skipped, never reaches the CLI

The leaves live beside the code that raises them; this module imports nothing, so every
layer (the pure ones included) can subclass the tree. `one_line` is how any exception,
ours or a driver's, is put in a message or a log line.
"""

from __future__ import annotations


class QwatchError(Exception):
    """The root: its message is one line for people, with no secret in it."""

    exit_code = 1


class UserError(QwatchError):
    """Bad input, configuration or schema: the message says what to change."""

    exit_code = 2


class ConfigError(UserError):
    """A bad setting: one line naming the setting and what is wrong (never its secret value)."""


class SchemaError(UserError):
    """The database schema does not fit this qwatch; the message says what to do."""


class Unavailable(QwatchError):
    """A server qwatch needs cannot be reached or used; the message names it (no password)."""

    exit_code = 1


class SourceUnavailable(Unavailable):
    """Where a site's live Stats are (its Redis, or the Django cache of a non-Redis broker)
    cannot be read; the message names it (no password)."""


class DecodeError(QwatchError, ValueError):
    """A record qwatch refuses; `reason` is short and safe to print (never a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def one_line(error: BaseException, *, with_type: bool = False) -> str:
    """An exception as one short line for a message: the driver's own error where
    SQLAlchemy wraps one (`orig`), its first line, at most 200 characters; the class name
    when it says nothing, or first with `with_type` (`OperationalError: database is locked`).
    """
    inner = getattr(error, "orig", None) or error
    lines = str(inner).strip().splitlines()
    text = " ".join(lines[0].split())[:200] if lines else ""
    name = type(inner).__name__
    if with_type:
        return f"{name}: {text}" if text else name
    return text or name
