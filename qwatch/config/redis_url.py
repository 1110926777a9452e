"""Redis connection fields from a URL or from redis-py keyword arguments.

redis://, rediss:// and unix:// URLs, or Q_CLUSTER['redis'] as a dict: only the fields the
source states are returned, for callers to layer over a base RedisSettings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote

from qwatch.config.urls import split_url
from qwatch.config.values import is_int, positive_seconds
from qwatch.errors import ConfigError


def _shown(piece: str, secrets: Sequence[str | None]) -> str:
    """repr(piece) unless it could be (part of) a secret."""
    for secret in secrets:
        if secret and (secret in piece or piece in secret):
            return "'***'"
    return repr(piece)


_FIELD_OPTIONS = frozenset(
    {"username", "password", "db", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}
)
_TIMEOUT_OPTIONS = {
    "socket_connect_timeout": "connect_timeout",
    "socket_timeout": "command_timeout",
}
_TLS_OPTIONS = frozenset(
    {"ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}
)
# redis-py pool tuning that is harmless to ignore: qwatch owns its own single connection.
_IGNORED_OPTIONS = frozenset(
    {
        "client_name",
        "decode_responses",
        "encoding",
        "health_check_interval",
        "max_connections",
        "protocol",
        "retry_on_timeout",
        "socket_keepalive",
    }
)
_KNOWN_OPTIONS = _FIELD_OPTIONS | _TLS_OPTIONS | set(_TIMEOUT_OPTIONS) | _IGNORED_OPTIONS
_FALSE_WORDS = frozenset({"0", "f", "false", "n", "no", "off"})
_TRUE_WORDS = frozenset({"1", "t", "true", "y", "yes", "on"})


def _cert_reqs_verify(value: object, setting: str) -> bool:
    """redis-py's ssl_cert_reqs: None or "none" turns verification off."""
    if value is None:
        return False
    if isinstance(value, str) and value.lower() in ("none", "optional", "required"):
        return value.lower() != "none"
    if is_int(value) and value in (0, 1, 2):
        return value != 0  # ssl.CERT_NONE / CERT_OPTIONAL / CERT_REQUIRED
    raise ConfigError(f"{setting} must be none, optional or required")


def _host_port(text: str, setting: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ConfigError(f"{setting}: malformed IPv6 host (write it as [::1]:6379)")
        port_text = after[1:]
    else:
        host, _, port_text = text.partition(":")
    if not port_text:
        return unquote(host), None
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ConfigError(f"{setting}: the port must be a number from 1 to 65535")
    return unquote(host), int(port_text)


def parse_redis_url(url: object, setting: str) -> dict[str, Any]:
    """The RedisSettings fields this URL states, and only those.

    Callers layer them over a base, as redis-py's from_url lets the URL win over kwargs.
    """
    if not isinstance(url, str):
        raise ConfigError(f"{setting} must be a string")
    parts = split_url(url)
    if parts is None:
        raise ConfigError(
            f"{setting}: not a URL (use redis://host:port/db, rediss://host:port/db "
            "or unix:///path/to/socket)"
        )
    scheme, userinfo, location, query = parts
    if "@" in query and "@" not in url.partition("?")[0]:
        # most likely a password with an unencoded "?": its tail would read as options
        raise ConfigError(
            f"{setting}: '@' after '?' (percent-encode '?' in a password as %3F, '@' as %40)"
        )
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"{setting}: unknown scheme {scheme!r} (use redis://, rediss:// or unix://)"
        )
    user_text, _, pass_text = userinfo.partition(":")
    password = unquote(pass_text) or None
    secrets = (pass_text, password)

    options: dict[str, str] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ConfigError(f"{setting}: malformed query string") from None
        for key, value in pairs:
            if key not in _KNOWN_OPTIONS:
                raise ConfigError(f"{setting}: unknown option {_shown(key, secrets)}")
            options[key] = value

    fields: dict[str, Any] = {"ssl": scheme == "rediss", "unix_socket_path": None}
    if scheme == "unix":
        # unix://host/path: redis-py ignores the host, and so do we
        slash = location.find("/")
        path = unquote(location[slash:]) if slash >= 0 else ""
        if path in ("", "/"):
            raise ConfigError(
                f"{setting}: a unix:// URL needs the socket path, e.g. unix:///run/redis.sock"
            )
        fields["unix_socket_path"] = path
        db_text = options.get("db")
    else:
        hostport, _, path = location.partition("/")
        host, port = _host_port(hostport, setting)
        if host:
            fields["host"] = host
        if port is not None:
            fields["port"] = port
        # as in redis-py, ?db= wins over the path
        db_text = options.get("db", path or None)
    if db_text is not None:
        if not (db_text.isascii() and db_text.isdigit()):
            raise ConfigError(
                f"{setting}: the database must be a number from 0 (the /db part or ?db=)"
            )
        fields["db"] = int(db_text)

    # userinfo wins over ?username=/?password=, as in redis-py
    username = unquote(user_text) or options.get("username") or None
    password = password or options.get("password") or None
    if username:
        fields["username"] = username
    if password:
        fields["password"] = password

    for option, attribute in _TIMEOUT_OPTIONS.items():
        if option in options:
            fields[attribute] = positive_seconds(options[option], f"{setting}: {option}")
    for option in _TLS_OPTIONS & options.keys():
        if scheme != "rediss":
            raise ConfigError(f"{setting}: {option} needs a rediss:// URL")
    for option in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if option in options:
            if not options[option]:
                raise ConfigError(f"{setting}: {option} must name a file")
            fields[option] = options[option]
    if "ssl_cert_reqs" in options:
        fields["ssl_verify"] = _cert_reqs_verify(
            options["ssl_cert_reqs"], f"{setting}: ssl_cert_reqs"
        )
    if "ssl_check_hostname" in options:
        word = options["ssl_check_hostname"].lower()
        if word not in _TRUE_WORDS | _FALSE_WORDS:
            raise ConfigError(f"{setting}: ssl_check_hostname must be true or false")
        fields["ssl_check_hostname"] = word in _TRUE_WORDS
    return fields


def fields_from_kwargs(options: Mapping[Any, Any], setting: str) -> dict[str, Any]:
    """RedisSettings fields from redis-py keyword arguments (Q_CLUSTER['redis'] as a dict)."""
    fields: dict[str, Any] = {}
    for key, value in options.items():
        name = f"{setting}[{key!r}]"
        if key in (
            "host",
            "username",
            "unix_socket_path",
            "ssl_ca_certs",
            "ssl_certfile",
            "ssl_keyfile",
        ):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a string")
            if value is not None:
                fields[key] = value
        elif key == "password":
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a string")
            fields[key] = value or None
        elif key in ("port", "db"):
            if isinstance(value, str) and value.isascii() and value.isdigit():
                value = int(value)
            if not is_int(value):
                raise ConfigError(f"{name} must be an integer")
            if key == "port" and not 0 < value < 65536:
                raise ConfigError(f"{name} must be from 1 to 65535")
            if key == "db" and value < 0:
                raise ConfigError(f"{name} must be 0 or more")
            fields[key] = value
        elif key in ("ssl", "ssl_check_hostname"):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be True or False")
            fields[key] = value
        elif key == "ssl_cert_reqs":
            fields["ssl_verify"] = _cert_reqs_verify(value, name)
        elif key in _TIMEOUT_OPTIONS and value is not None:
            # None is redis-py's "no timeout": qwatch keeps its own
            fields[_TIMEOUT_OPTIONS[key]] = positive_seconds(value, name)
        # other redis-py options do not change where or how qwatch connects
    return fields
