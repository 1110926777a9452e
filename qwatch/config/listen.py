"""The daemon's `listen` address: HOST:PORT, [IPv6]:PORT, or a bare :PORT on 127.0.0.1."""

from __future__ import annotations

from dataclasses import dataclass

from qwatch.errors import ConfigError

DEFAULT_LISTEN_HOST = "127.0.0.1"  # a bare :PORT never exposes the metrics beyond this machine


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: object, setting: str) -> ListenAddress:
    """HOST:PORT as a ListenAddress; a bad value is a ConfigError naming `setting`."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{setting} must be HOST:PORT or :PORT")
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ConfigError(f"{setting} must be HOST:PORT or :PORT (no port in {value!r})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{setting}: write an IPv6 address in brackets, as [::1]:9187")
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{setting}: the port must be a number from 1 to 65535")
    if any(c.isspace() or c in "/@?#" for c in host):
        raise ConfigError(f"{setting}: {host!r} is not a host name or address")
    return ListenAddress(host or DEFAULT_LISTEN_HOST, int(port_text))
