"""[alerts] and [[notify]] in qwatch.toml: the rules' thresholds and who is told.

    [alerts]
    repeat = "4h"           # remind while firing ("0s": never)
    timeout = "10s"         # per delivery attempt
    attempts = 3            # per message and target
    [alerts.rules.cluster_down]
    for = "2m"              # duration rules: for; counting rules: count, window
    enabled = true

    [[notify]]
    kind = "webhook"        # or "command", "email"

Secrets (webhook URLs and header values, command arguments, SMTP passwords) are kept out
of every repr and message: a target shows itself by `label`, which names only where it
goes (a webhook's scheme and host, a command's program, an SMTP server and recipients).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from qwatch.alerts.thresholds import DEFAULTS, RULES, TAKES, Threshold
from qwatch.config.urls import split_url
from qwatch.config.values import ConfigError, is_int
from qwatch.durations import DurationError, parse_duration

WEBHOOK_FORMATS = ("alertmanager", "slack")
TARGET_KINDS = ("webhook", "command", "email")


def _host_port(location: str) -> tuple[str, int | None] | None:
    """'mail.internal:587' -> ('mail.internal', 587); '[::1]:25' -> ('::1', 25); None if bad."""
    hostport = location.split("/", 1)[0]
    if hostport.startswith("["):
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        return None
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return host, int(port_text)


@dataclass(frozen=True)
class WebhookTarget:
    """POST application/json: Alertmanager's webhook body, or Slack's {"text": …}."""

    url: str = field(repr=False)  # its path and query may hold a token
    format: str = "alertmanager"
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    kind = "webhook"

    @property
    def label(self) -> str:
        parts = split_url(self.url)
        if parts is None:
            return "webhook <not a URL>"
        scheme, _, location, _ = parts
        return f"webhook {scheme}://{location.split('/', 1)[0]}"


@dataclass(frozen=True)
class CommandTarget:
    """A program run per message: the message as JSON on stdin, QWATCH_ALERT_* variables."""

    argv: tuple[str, ...] = field(repr=False)  # arguments may carry tokens
    kind = "command"

    @property
    def label(self) -> str:
        return f"command {self.argv[0]}"


@dataclass(frozen=True)
class EmailTarget:
    """SMTP: `security` is "tls" (smtps://, implicit TLS), "starttls" (smtp://, required),
    or "none" (smtp://…?starttls=false, a local relay; no login allowed)."""

    host: str
    port: int
    to: tuple[str, ...]
    sender: str = "qwatch@localhost"
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_certs: str | None = None  # ?ssl_ca_certs=/path: a private CA instead of the system's
    kind = "email"

    @property
    def label(self) -> str:
        return f"email {self.host}:{self.port} to {', '.join(self.to)}"


Target = WebhookTarget | CommandTarget | EmailTarget


@dataclass(frozen=True)
class AlertSettings:
    repeat_s: float = 4 * 3600.0  # 0: no reminders
    timeout_s: float = 10.0
    attempts: int = 3
    rules: Mapping[str, Threshold] = field(default_factory=lambda: DEFAULTS)
    targets: tuple[Target, ...] = ()


def _duration(value: object, setting: str, *, zero: bool = False) -> float:
    hint = "a duration like 30s, 2m or 4h"
    if not isinstance(value, str):
        raise ConfigError(f"{setting} must be {hint} (a string)")
    try:
        span = parse_duration(value)
    except DurationError:
        raise ConfigError(f"{setting}: cannot read {value!r} as {hint}") from None
    if span <= timedelta(0) and not zero:
        raise ConfigError(f"{setting} must be longer than 0s")
    return span.total_seconds()


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"unknown setting {where}.{key} ({where} takes {', '.join(allowed)})")


def _rule(name: str, table: object, where: str) -> Threshold:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table ([{where}])")
    takes = TAKES[name]
    _check_keys(table, ("enabled", *takes), where)
    default = DEFAULTS[name]
    enabled = table.get("enabled", default.enabled)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled must be true or false")
    count = table.get("count", default.count)
    if not is_int(count) or count < 1:
        raise ConfigError(f"{where}.count must be a whole number, 1 or more")
    for_s = _duration(table["for"], f"{where}.for", zero=True) if "for" in table else None
    window_s = _duration(table["window"], f"{where}.window") if "window" in table else None
    return Threshold(
        enabled=enabled,
        for_s=default.for_s if for_s is None else for_s,
        count=count,
        window_s=default.window_s if window_s is None else window_s,
    )


def _webhook(table: Mapping[str, Any], where: str) -> WebhookTarget:
    _check_keys(table, ("kind", "url", "format", "headers"), where)
    url = table.get("url")
    parts = split_url(url) if isinstance(url, str) else None
    if parts is None or parts[0] not in ("http", "https") or not _host_port(parts[2]):
        raise ConfigError(f"{where}.url must be an http:// or https:// URL")
    if parts[1]:
        raise ConfigError(f"{where}.url: put credentials in headers, not in the URL")
    fmt = table.get("format", "alertmanager")
    if fmt not in WEBHOOK_FORMATS:
        shown = repr(fmt) if isinstance(fmt, str) else "it"
        raise ConfigError(f"{where}.format: {shown} is not one of {', '.join(WEBHOOK_FORMATS)}")
    headers = table.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError(f'{where}.headers must be a table of strings (name = "value")')
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n\0") or not name.isascii() or " " in name:
            # the name only: the value is likely a token
            raise ConfigError(f"{where}.headers: {name!r} is not a valid header line")
    assert isinstance(url, str)  # split_url accepted it
    return WebhookTarget(url=url, format=fmt, headers=tuple(headers.items()))


def _command(table: Mapping[str, Any], where: str) -> CommandTarget:
    _check_keys(table, ("kind", "argv"), where)
    argv = table.get("argv")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) and a for a in argv)):
        raise ConfigError(f"{where}.argv must be a non-empty list of non-empty strings")
    return CommandTarget(argv=tuple(argv))


def _email(table: Mapping[str, Any], where: str) -> EmailTarget:
    _check_keys(table, ("kind", "smtp_url", "to", "from"), where)
    url = table.get("smtp_url")
    parts = split_url(url) if isinstance(url, str) else None
    setting = f"{where}.smtp_url"
    if parts is None or parts[0] not in ("smtp", "smtps"):
        raise ConfigError(f"{setting} must be smtp://[user:password@]host[:port] or smtps://…")
    scheme, userinfo, location, query = parts
    hostport = _host_port(location)
    if hostport is None:
        raise ConfigError(f"{setting}: cannot read its host and port")
    options = dict(pair.partition("=")[::2] for pair in query.split("&") if pair)
    unknown = set(options) - {"starttls", "ssl_ca_certs"}
    if unknown:
        shown = sorted(unknown)[0]
        raise ConfigError(f"{setting}: unknown option {shown!r} (starttls, ssl_ca_certs)")
    ca_certs = unquote(options["ssl_ca_certs"]) if "ssl_ca_certs" in options else None
    if ca_certs == "":
        raise ConfigError(f"{setting}: ssl_ca_certs must name a file")
    security = "tls" if scheme == "smtps" else "starttls"
    if "starttls" in options:
        if scheme == "smtps" or options["starttls"].lower() not in ("true", "false"):
            raise ConfigError(f"{setting}: starttls=true|false applies to smtp:// only")
        if options["starttls"].lower() == "false":
            security = "none"
    if security == "none" and ca_certs is not None:
        raise ConfigError(f"{setting}: ssl_ca_certs needs TLS (smtps://, or drop starttls=false)")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username, password = unquote(user), unquote(secret) if colon else None
        if security == "none":
            raise ConfigError(f"{setting}: a login needs TLS (smtps://, or drop starttls=false)")
    host, port = hostport
    if port is None:
        port = 465 if security == "tls" else 587
    to = table.get("to")
    if isinstance(to, str):
        to = [to]
    if not (isinstance(to, list) and to and all(isinstance(a, str) and "@" in a for a in to)):
        raise ConfigError(f"{where}.to must be an address or a list of addresses")
    sender = table.get("from", "qwatch@localhost")
    if not isinstance(sender, str) or "@" not in sender:
        raise ConfigError(f"{where}.from must be an address")
    return EmailTarget(
        host=host,
        port=port,
        to=tuple(to),
        sender=sender,
        security=security,
        username=username or None,
        password=password,
        ca_certs=ca_certs,
    )


def _target(table: object, where: str) -> Target:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    kind = table.get("kind")
    if kind == "webhook":
        return _webhook(table, where)
    if kind == "command":
        return _command(table, where)
    if kind == "email":
        return _email(table, where)
    shown = repr(kind) if isinstance(kind, str) else "missing"
    raise ConfigError(f"{where}.kind: {shown} is not one of {', '.join(TARGET_KINDS)}")


def alerts_from_document(alerts: Mapping[str, Any], notify: list[Any], label: str) -> AlertSettings:
    """The [alerts] table and the [[notify]] tables of a TOML file (already read)."""
    try:
        _check_keys(alerts, ("repeat", "timeout", "attempts", "rules"), "alerts")
        repeat_s = _duration(alerts.get("repeat", "4h"), "alerts.repeat", zero=True)
        timeout_s = _duration(alerts.get("timeout", "10s"), "alerts.timeout")
        attempts = alerts.get("attempts", 3)
        if not is_int(attempts) or not 1 <= attempts <= 10:
            raise ConfigError("alerts.attempts must be a whole number from 1 to 10")
        rules_table = alerts.get("rules", {})
        if not isinstance(rules_table, dict):
            raise ConfigError("alerts.rules must be a table ([alerts.rules.NAME])")
        rules = dict(DEFAULTS)
        for name, table in rules_table.items():
            if name not in RULES:
                raise ConfigError(f"alerts.rules: unknown rule {name!r} ({', '.join(RULES)})")
            rules[name] = _rule(name, table, f"alerts.rules.{name}")
        targets = tuple(_target(table, f"notify[{i}]") for i, table in enumerate(notify))
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    return AlertSettings(
        repeat_s=repeat_s,
        timeout_s=timeout_s,
        attempts=attempts,
        rules=MappingProxyType(rules),
        targets=targets,
    )
