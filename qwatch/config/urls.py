"""Splitting scheme://… URLs without misreading a password, and masking them for messages."""

from __future__ import annotations

import re

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "sslpassword", "secret"})


def split_url(url: str) -> tuple[str, str, str, str] | None:
    """(scheme, userinfo, location, query), or None when this is not scheme://….

    The userinfo ends at the last "@" before the query, so an unencoded "/" or "@" in a
    password still lands in the password and never in a host or path we might print.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME_RE.match(scheme):
        return None
    before_query, _, query = rest.partition("?")
    userinfo, _, location = before_query.rpartition("@")
    return scheme.lower(), userinfo, location, query


def safe_url(url: str) -> str:
    """The URL with any password masked as ***, for messages and logs."""
    parts = split_url(url)
    if parts is None:
        return "<not a URL>"
    scheme, userinfo, location, query = parts
    head = f"{scheme}://"
    if userinfo:
        user, colon, _ = userinfo.partition(":")
        head += f"{user}:***@" if colon else f"{userinfo}@"
    if not query:
        return head + location
    masked = "&".join(
        f"{key}=***" if key.lower() in _SECRET_QUERY_KEYS else pair
        for pair in query.split("&")
        for key in [pair.partition("=")[0]]
    )
    return f"{head}{location}?{masked}"
