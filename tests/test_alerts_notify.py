"""Delivery to real receivers started by the tests: an aiohttp HTTP server, an aiosmtpd
SMTP server, and a command; retries, timeouts and what an outcome may say."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from qwatch.alerts.dispatch import Dispatcher
from qwatch.alerts.notify import Outcome, backoff_delay, deliver, deliver_all, unreachable
from qwatch.alerts.payloads import Message
from qwatch.config import CommandTarget, EmailTarget, WebhookTarget, load_settings
from qwatch.config.alerts import AlertSettings
from tests.helpers import ALERT_T0, down_alert, free_port

SENTINEL = "Sentinel-7f3a"
T0 = ALERT_T0
ALERT = down_alert(details={"held_s": 60.0})
MESSAGE = Message("shop", (ALERT,))


def quick(attempt: int) -> float:
    return 0.01


@dataclass
class Receiver:
    """An HTTP receiver: answers the statuses in `script` in turn (then 200), records bodies."""

    script: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    requests: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    accepted: list[Any] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status = self.script.pop(0) if self.script else 200
        if status == 200:
            self.accepted.append(body)
        return web.Response(status=status, text="ok" if status == 200 else "no")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    found.url = f"http://{host}:{port}/hook"
    yield found
    await runner.cleanup()


async def test_a_receiver_that_answers_500_twice_gets_the_alert_once(receiver: Receiver) -> None:
    receiver.script = [500, 500]
    target = WebhookTarget(
        url=f"{receiver.url}?token={SENTINEL}", headers=(("Authorization", f"Bearer {SENTINEL}"),)
    )
    outcome = await deliver(target, MESSAGE, attempts=3, backoff=quick)
    assert outcome.ok and outcome.attempts == 3 and outcome.error is None
    assert len(receiver.requests) == 3
    [body] = receiver.accepted
    assert body["version"] == "4" and body["status"] == "firing"
    assert body["alerts"][0]["labels"]["alertname"] == "cluster_down"
    headers = receiver.requests[-1][0]
    assert headers["Authorization"] == f"Bearer {SENTINEL}"
    assert headers["Content-Type"] == "application/json"
    assert SENTINEL not in repr(outcome)


async def test_slack_format(receiver: Receiver) -> None:
    outcome = await deliver(WebhookTarget(url=receiver.url, format="slack"), MESSAGE)
    assert outcome.ok and outcome.attempts == 1
    assert receiver.accepted == [{"text": f"[FIRING] cluster_down (critical) {ALERT.summary}"}]


async def test_a_target_that_stays_down_gives_up_after_the_attempts(receiver: Receiver) -> None:
    receiver.script = [503] * 10
    target = WebhookTarget(url=f"{receiver.url}?token={SENTINEL}")
    outcome = await deliver(target, MESSAGE, attempts=4, backoff=quick)
    assert outcome == Outcome(target.label, False, 4, "HTTP 503", outcome.seconds)
    assert outcome.target == f"webhook {receiver.url.rsplit('/', 1)[0]}"
    assert receiver.accepted == []


async def test_a_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.script = [400, 400]
    outcome = await deliver(WebhookTarget(url=receiver.url), MESSAGE, backoff=quick)
    assert (outcome.ok, outcome.attempts, outcome.error) == (False, 1, "HTTP 400")


async def test_each_attempt_has_a_timeout(receiver: Receiver) -> None:
    receiver.delay_s = 2.0
    outcome = await deliver(
        WebhookTarget(url=receiver.url), MESSAGE, timeout_s=0.2, attempts=2, backoff=quick
    )
    assert (outcome.ok, outcome.attempts, outcome.error) == (False, 2, "timed out after 0.2s")
    assert outcome.seconds < 1.5


async def test_nobody_listening() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook?token={SENTINEL}"
    outcome = await deliver(WebhookTarget(url=url), MESSAGE, attempts=2, backoff=quick)
    assert (outcome.ok, outcome.attempts) == (False, 2)
    assert outcome.error == "ClientConnectorError"
    assert SENTINEL not in repr(outcome)


# ---------------------------------------------------------------------------- command


def recorder(tmp_path: Path, exit_status: int = 0) -> CommandTarget:
    script = tmp_path / "page-oncall.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, os, sys
            out = sys.argv[1]
            record = {{
                "stdin": json.load(sys.stdin),
                "env": {{k: v for k, v in os.environ.items() if k.startswith("QWATCH_ALERT_")}},
            }}
            with open(out, "a") as f:
                f.write(json.dumps(record) + "\\n")
            sys.exit({exit_status})
            """
        )
    )
    return CommandTarget(argv=(sys.executable, str(script), str(tmp_path / "received.jsonl")))


def received(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "received.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


async def test_a_command_target_receives_the_json(tmp_path: Path) -> None:
    outcome = await deliver(recorder(tmp_path), MESSAGE)
    assert outcome.ok and outcome.attempts == 1
    [record] = received(tmp_path)
    assert record["stdin"]["version"] == "4"
    assert record["stdin"]["alerts"][0]["annotations"]["summary"] == ALERT.summary
    assert record["env"]["QWATCH_ALERT_RULE"] == "cluster_down"
    assert record["env"]["QWATCH_ALERT_STATUS"] == "firing"
    assert record["env"]["QWATCH_ALERT_HOST"] == "web1"


async def test_a_failing_command_is_retried(tmp_path: Path) -> None:
    outcome = await deliver(recorder(tmp_path, exit_status=3), MESSAGE, backoff=quick)
    assert (outcome.ok, outcome.attempts, outcome.error) == (False, 3, "exit status 3")
    assert len(received(tmp_path)) == 3


async def test_a_hanging_command_is_killed(tmp_path: Path) -> None:
    target = CommandTarget(argv=(sys.executable, "-c", "import time; time.sleep(30)"))
    outcome = await deliver(target, MESSAGE, timeout_s=0.5, attempts=1)
    assert (outcome.ok, outcome.error) == (False, "timed out after 0.5s")
    assert outcome.seconds < 5


async def test_a_missing_program(tmp_path: Path) -> None:
    target = CommandTarget(argv=(str(tmp_path / "nope"), f"--token={SENTINEL}"))
    outcome = await deliver(target, MESSAGE, backoff=quick)
    assert (outcome.ok, outcome.attempts) == (False, 1)
    assert outcome.error == "cannot run it (FileNotFoundError)"
    assert SENTINEL not in repr(outcome)


# ---------------------------------------------------------------------------- email


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        # handled=False: the server itself answers 535 to a wrong password
        return AuthResult(success=auth_data.password == SENTINEL.encode(), handled=False)


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        auth_require_tls=False,  # the test server has no certificate; qwatch's config insists
    )
    controller.start()
    yield mailbox, port
    controller.stop()


async def test_email_reaches_a_real_smtp_server(smtp_server: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp_server
    target = EmailTarget(
        host="127.0.0.1",
        port=port,
        to=("oncall@example.com", "lead@example.com"),
        sender="qwatch@example.com",
        security="none",
    )
    outcome = await deliver(target, MESSAGE)
    assert outcome.ok and outcome.attempts == 1
    [(sender, recipients, content)] = mailbox.messages
    assert sender == "qwatch@example.com"
    assert recipients == ["oncall@example.com", "lead@example.com"]
    email = message_from_bytes(content)
    assert email["Subject"] == "[qwatch] FIRING shop: cluster_down web1"
    text = email.get_payload(decode=True)
    assert isinstance(text, bytes) and ALERT.summary in text.decode()


async def test_email_logs_in(smtp_server: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp_server
    base = EmailTarget(host="127.0.0.1", port=port, to=("a@example.com",), security="none")
    good = EmailTarget(**{**base.__dict__, "username": "qwatch", "password": SENTINEL})
    outcome = await deliver(good, MESSAGE)
    assert outcome.ok, outcome
    assert mailbox.logins == [(b"qwatch", SENTINEL.encode())]
    bad = EmailTarget(**{**base.__dict__, "username": "qwatch", "password": "wrong"})
    outcome = await deliver(bad, MESSAGE, backoff=quick)
    assert (outcome.ok, outcome.attempts) == (False, 1)  # a 5xx reply is final
    assert outcome.error == "SMTPAuthenticationError 535"
    assert len(mailbox.messages) == 1
    assert SENTINEL not in repr(good) and SENTINEL not in good.label


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), its own CA."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
async def test_email_over_tls_with_a_login(
    scheme: str, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    """STARTTLS (smtp://) or TLS from the start (smtps://), configured as a user would,
    against a server that refuses a login before TLS."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox, port = Mailbox(), free_port()
    tls: dict[str, Any] = {"tls_context": context, "require_starttls": True}
    if scheme == "smtps":
        # aiosmtpd counts only STARTTLS as TLS before AUTH; smtps:// is TLS from the start
        tls = {"ssl_context": context, "auth_require_tls": False}
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        **tls,
    )
    controller.start()
    try:
        (tmp_path / "qwatch.toml").write_text(
            "[[notify]]\nkind = 'email'\n"
            f"smtp_url = '{scheme}://qwatch:{SENTINEL}@127.0.0.1:{port}?ssl_ca_certs={cert}'\n"
            "to = 'oncall@example.com'\n"
        )
        [target] = load_settings(environ={}, cwd=tmp_path).alerts.targets
        assert isinstance(target, EmailTarget)
        assert target.security == ("starttls" if scheme == "smtp" else "tls")
        outcome = await deliver(target, MESSAGE, attempts=1)
    finally:
        controller.stop()
    assert outcome.ok, outcome
    assert mailbox.logins == [(b"qwatch", SENTINEL.encode())]
    assert len(mailbox.messages) == 1


async def test_an_untrusted_certificate_is_refused(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    try:
        target = EmailTarget(host="127.0.0.1", port=port, to=("a@example.com",), security="tls")
        outcome = await deliver(target, MESSAGE, attempts=1)
    finally:
        controller.stop()
    assert not outcome.ok and mailbox.messages == []


async def test_deliver_all_to_several_targets(receiver: Receiver, tmp_path: Path) -> None:
    outcomes = await deliver_all(
        [WebhookTarget(url=receiver.url), recorder(tmp_path)], MESSAGE, backoff=quick
    )
    assert [o.ok for o in outcomes] == [True, True]
    assert len(receiver.accepted) == 1 and len(received(tmp_path)) == 1


def test_backoff_delay() -> None:
    assert [backoff_delay(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 4, 8, 16, 30, 30]


async def test_a_surprise_is_an_outcome_not_an_exception(receiver: Receiver) -> None:
    # the configuration refuses such a header; built directly, aiohttp refuses to send it
    target = WebhookTarget(url=receiver.url, headers=(("X-Token", f"{SENTINEL}\r\nX-Evil: 1"),))
    outcome = await deliver(target, MESSAGE, backoff=quick)
    assert not outcome.ok and outcome.attempts == 1
    assert outcome.error is not None and outcome.error.startswith("unexpected ")
    assert SENTINEL not in repr(outcome) and receiver.requests == []


# ---------------------------------------------------------------------------- at start


async def test_reachability_is_told_without_sending(
    receiver: Receiver, smtp_server: tuple[Mailbox, int], tmp_path: Path
) -> None:
    mailbox, port = smtp_server
    closed = free_port()
    reachable = [
        WebhookTarget(url=receiver.url),
        EmailTarget(host="127.0.0.1", port=port, to=("a@example.com",), security="none"),
        CommandTarget(argv=(sys.executable, "-c", "pass")),
    ]
    for target in reachable:
        assert await unreachable(target, 2.0) is None, target.label
    assert receiver.requests == [] and mailbox.messages == []  # nothing was sent
    assert await unreachable(
        WebhookTarget(url=f"http://127.0.0.1:{closed}/h?t={SENTINEL}"), 2.0
    ) == ("ConnectionRefusedError")
    email = EmailTarget(host="127.0.0.1", port=closed, to=("a@example.com",), security="none")
    assert await unreachable(email, 2.0) == "ConnectionRefusedError"
    missing = CommandTarget(argv=(str(tmp_path / "page-oncall"), SENTINEL))
    assert await unreachable(missing, 2.0) == f"no executable {str(tmp_path / 'page-oncall')!r}"


async def test_an_unreachable_target_at_start_is_a_warning(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/hook?token={SENTINEL}"
    settings = AlertSettings(targets=(WebhookTarget(url=receiver.url), WebhookTarget(url=closed)))

    async def no_silences(at: object) -> list[Any]:
        return []

    dispatcher = Dispatcher(settings, no_silences, lambda site, notified: None)
    with caplog.at_level("WARNING", logger="qwatch.alerts"):
        await dispatcher.check_targets()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "cannot be reached now: ConnectionRefusedError" in warnings[0]
    assert SENTINEL not in warnings[0] and "/hook" not in warnings[0]
