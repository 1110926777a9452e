"""Delivering a Message to its targets: webhook (aiohttp), command, email (aiosmtplib).

Each attempt has its own timeout; a failed one is retried up to `attempts` in all, after
`backoff_delay(n)` seconds, unless retrying cannot help (an HTTP 4xx other than 408 and 429).
Nothing raises: `deliver` returns an `Outcome` for the caller to log and store. Outcomes name
the target by its label and the failure by its kind (HTTP status, exit status, exception
name): never a URL's path or query, a header, an argument or a password.

The caller runs deliveries in their own task, so that a slow target never holds a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from qwatch.alerts.payloads import (
    Message,
    alertmanager_body,
    command_env,
    email_message,
    slack_body,
)
from qwatch.config.alerts import CommandTarget, EmailTarget, Target, WebhookTarget
from qwatch.fmt import duration
from qwatch.retry import backoff


@dataclass(frozen=True, slots=True)
class Outcome:
    target: str  # the target's label: safe to log
    ok: bool
    attempts: int
    error: str | None = None  # the last failure, safe to log and store
    seconds: float = 0.0


class _Failed(Exception):
    """One attempt failed; `retry` says whether another could succeed."""

    def __init__(self, reason: str, *, retry: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


def backoff_delay(attempt: int, *, base_s: float = 1.0, cap_s: float = 30.0) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, …): 1, 2, 4 … up to 30
    (qwatch.retry's backoff, the one every retry in qwatch uses)."""
    return backoff(attempt, base_s, cap_s)


async def _webhook(target: WebhookTarget, message: Message, timeout_s: float) -> None:
    import aiohttp  # here: only a sending daemon needs it

    body = slack_body(message) if target.format == "slack" else alertmanager_body(message)
    headers = {"Content-Type": "application/json", **dict(target.headers)}
    data = json.dumps(body).encode()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.post(target.url, data=data, headers=headers, allow_redirects=False) as reply,
        ):
            status = reply.status
            await reply.read()
    except aiohttp.ClientError as exc:
        # their messages may quote the URL, query string included: the name says enough
        raise _Failed(type(exc).__name__) from None
    if 200 <= status < 300:
        return
    retry = status >= 500 or status in (408, 429)
    raise _Failed(f"HTTP {status}", retry=retry)


async def _command(target: CommandTarget, message: Message, timeout_s: float) -> None:
    stdin = json.dumps(alertmanager_body(message)).encode()
    try:
        process = await asyncio.create_subprocess_exec(
            *target.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, **command_env(message)},
        )
    except OSError as exc:
        raise _Failed(f"cannot run it ({type(exc).__name__})", retry=False) from None
    try:
        await process.communicate(stdin)
    finally:
        if process.returncode is None:  # timed out or cancelled: end what this call started
            process.kill()
            await asyncio.shield(process.wait())
    if process.returncode != 0:
        raise _Failed(f"exit status {process.returncode}")


async def _email(target: EmailTarget, message: Message, timeout_s: float) -> None:
    import aiosmtplib

    email = email_message(message, sender=target.sender, to=target.to, now=datetime.now(UTC))
    try:
        await aiosmtplib.send(
            email,
            hostname=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            use_tls=target.security == "tls",
            start_tls=target.security == "starttls",
            cert_bundle=target.ca_certs,
            timeout=timeout_s,
        )
    except aiosmtplib.SMTPResponseException as exc:
        # SMTP's 4xx replies are transient, its 5xx ones final
        raise _Failed(f"{type(exc).__name__} {exc.code}", retry=400 <= exc.code < 500) from None
    except aiosmtplib.SMTPException as exc:
        raise _Failed(type(exc).__name__) from None
    except OSError as exc:
        raise _Failed(type(exc).__name__) from None


_SENDERS: dict[str, Callable[..., Awaitable[None]]] = {
    "webhook": _webhook,
    "command": _command,
    "email": _email,
}


async def deliver(
    target: Target,
    message: Message,
    *,
    timeout_s: float = 10.0,
    attempts: int = 3,
    backoff: Callable[[int], float] = backoff_delay,
) -> Outcome:
    """Send `message` to `target`: `attempts` tries at most, `timeout_s` each."""
    send = _SENDERS[target.kind]
    started = time.monotonic()
    error: str | None = None
    attempt = 0
    while attempt < attempts:
        attempt += 1
        try:
            await asyncio.wait_for(send(target, message, timeout_s), timeout_s)
        except TimeoutError:
            error = f"timed out after {label_seconds(timeout_s)}"
        except _Failed as failed:
            error = failed.reason
            if not failed.retry:
                break
        except Exception as exc:  # a surprise must not end the caller's delivery task
            error = f"unexpected {type(exc).__name__}"
            break
        else:
            return Outcome(target.label, True, attempt, None, time.monotonic() - started)
        if attempt < attempts:
            await asyncio.sleep(backoff(attempt))
    return Outcome(target.label, False, attempt, error, time.monotonic() - started)


async def deliver_all(
    targets: Sequence[Target],
    message: Message,
    *,
    timeout_s: float = 10.0,
    attempts: int = 3,
    backoff: Callable[[int], float] = backoff_delay,
) -> list[Outcome]:
    """The message to every target at once; outcomes in the targets' order."""
    return list(
        await asyncio.gather(
            *(
                deliver(t, message, timeout_s=timeout_s, attempts=attempts, backoff=backoff)
                for t in targets
            )
        )
    )


def label_seconds(seconds: float) -> str:
    """10.0 -> '10s'; below a second, as a decimal."""
    if seconds >= 1 and float(seconds).is_integer():
        return duration(timedelta(seconds=seconds))
    return f"{seconds:g}s"


async def unreachable(target: Target, timeout_s: float) -> str | None:
    """Why `target` cannot take a message now (None: it can be reached), checked without
    sending anything: a TCP connection to a webhook's or an SMTP server's address, or the
    command's program on PATH. The reason names a kind of failure, never the URL's path."""
    if isinstance(target, CommandTarget):
        program = target.argv[0]
        found = shutil.which(program)
        return None if found else f"no executable {program!r}"
    if isinstance(target, EmailTarget):
        host, port = target.host, target.port
    else:
        url = urlsplit(target.url)
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            return "not a port"
        if not url.hostname:
            return "not a URL"
        host = url.hostname
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"no answer within {timeout_s:.0f} s"
    except OSError as error:
        return type(error).__name__
    writer.close()
    with contextlib.suppress(OSError):  # closing a connection we only opened
        await writer.wait_closed()
    return None
