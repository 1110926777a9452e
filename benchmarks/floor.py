"""The floor of reading a Django Q record in Python: the least any reader must do.

HMAC-SHA256 with the key derived once (django.core.signing's salted_hmac), base64, zlib,
and an unpickle restricted to stand-ins: no opcode allow-list, no field checks, no result
objects. Standard library only, so a floor process imports nothing else. Used by
benchmarks/live_read.py (in-process) and benchmarks/cold_status.py (a process of its own).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import io
import pickle
import zlib
from typing import Any


class _Stand:
    """What the floor's unpickler builds instead of Stat, UUID and the lazy status."""

    def __init__(self, *args: object) -> None:
        self.args = args

    def __setstate__(self, state: object) -> None:
        self.state = state


def _lazy(func: object, args: tuple[str], kwargs: object, *classes: object) -> str:
    return args[0]


_GLOBALS: dict[tuple[str, str], Any] = {
    ("django_q.status", "Stat"): _Stand,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "timezone"): datetime.timezone,
    ("datetime", "timedelta"): datetime.timedelta,
    ("uuid", "UUID"): _Stand,
    ("django.utils.functional", "_lazy_proxy_unpickle"): _lazy,
    ("django.utils.translation", "gettext"): None,
    ("builtins", "str"): str,
}


class _FloorUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _GLOBALS[module, name]


def signing_key(site: str, secret_key: str) -> bytes:
    """django.core.signing: salted_hmac(salt + "signer", value, SECRET_KEY, "sha256")."""
    return hashlib.sha256((site + "signer" + secret_key).encode()).digest()


def decode(raw: bytes, key: bytes) -> None:
    """Verify and unpickle one record, the floor's way; raises ValueError on a bad one."""
    value, _, sig = raw.rpartition(b":")
    mac = base64.urlsafe_b64encode(hmac.digest(key, value, "sha256")).rstrip(b"=")
    if not hmac.compare_digest(mac, sig):
        raise ValueError("bad signature")
    payload = value.rpartition(b":")[0][1:]
    data = zlib.decompress(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    _FloorUnpickler(io.BytesIO(data)).load()
