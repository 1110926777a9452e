"""Every error qwatch raises on purpose, as one tree (`cli.main` catches the root once).

    QwatchError                 a one-line message, safe to print: never a secret
    ├── UserError        exit 2 bad input, configuration or schema: the user can fix it
    │   ├── ConfigError         a setting (names the setting, never its value)
    │   ├── SchemaError         the history's schema does not fit this qwatch
    │   └── …                   DurationError, PlanError, BadInput, BadReport, BadReference
    ├── Unavailable      exit 1 a server qwatch needs cannot be reached or used
    │   └── …                   RedisUnavailable, StoreUnavailable, NotReadable, DemoUnavailable
    └── DecodeError             one record refused: counted and skipped, never reaches the CLI

The leaves live beside the code that raises them; this module imports nothing, so every
layer (the pure ones included) can subclass the tree.
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


class DecodeError(QwatchError, ValueError):
    """A record qwatch refuses; `reason` is short and safe to print (never a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
