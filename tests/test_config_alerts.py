"""[alerts] and [[notify]] in qwatch.toml: defaults, every target kind, and the error lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from qwatch.alerts.thresholds import CLUSTER_DOWN, DEFAULTS, RESTART_LOOP, STUCK, Threshold
from qwatch.config import (
    AlertSettings,
    CommandTarget,
    ConfigError,
    EmailTarget,
    Settings,
    WebhookTarget,
    load_settings,
)

SENTINEL = "Sentinel-7f3a"  # in every secret below: one check covers them all


def load(tmp_path: Path, text: str) -> Settings:
    (tmp_path / "qwatch.toml").write_text(textwrap.dedent(text))
    return load_settings(environ={}, cwd=tmp_path)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert "\n" not in message
    assert SENTINEL not in message and SENTINEL not in repr(caught.value)
    assert message.startswith("qwatch.toml: ")
    return message.removeprefix("qwatch.toml: ")


def test_defaults_without_any_table(tmp_path: Path) -> None:
    alerts = load(tmp_path, "").alerts
    assert alerts == AlertSettings()
    assert alerts.repeat_s == 4 * 3600 and alerts.timeout_s == 10 and alerts.attempts == 3
    assert dict(alerts.rules) == dict(DEFAULTS) and alerts.targets == ()


def test_the_issue_example(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        f"""
        [[notify]]
        kind = "webhook"
        url = "https://hooks.example/services/T0/{SENTINEL}?token={SENTINEL}"
        format = "alertmanager"
        headers = {{ Authorization = "Bearer {SENTINEL}" }}

        [[notify]]
        kind = "command"
        argv = ["/usr/local/bin/page-oncall", "--token={SENTINEL}"]

        [[notify]]
        kind = "email"
        smtp_url = "smtp://user:{SENTINEL}@mail.internal:587"
        to = ["oncall@example.com"]

        [alerts]
        repeat = "4h"
        [alerts.rules.cluster_down]
        for = "2m"
        [alerts.rules.restart_loop]
        count = 5
        window = "30m"
        [alerts.rules.stuck]
        enabled = false
        """,
    )
    alerts = settings.alerts
    webhook, command, email = alerts.targets
    assert isinstance(webhook, WebhookTarget) and webhook.format == "alertmanager"
    assert webhook.headers == (("Authorization", f"Bearer {SENTINEL}"),)
    assert webhook.label == "webhook https://hooks.example"
    assert isinstance(command, CommandTarget)
    assert command.argv == ("/usr/local/bin/page-oncall", f"--token={SENTINEL}")
    assert command.label == "command /usr/local/bin/page-oncall"
    assert email == EmailTarget(
        host="mail.internal",
        port=587,
        to=("oncall@example.com",),
        security="starttls",
        username="user",
        password=SENTINEL,
    )
    assert email.label == "email mail.internal:587 to oncall@example.com"
    assert alerts.rules[CLUSTER_DOWN] == Threshold(for_s=120)
    assert alerts.rules[RESTART_LOOP] == Threshold(count=5, window_s=1800)
    assert alerts.rules[STUCK] == Threshold(enabled=False, for_s=600)
    for shown in (repr(settings), str(settings), *(t.label for t in alerts.targets)):
        assert SENTINEL not in shown


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtps://mail.internal", ("mail.internal", 465, "tls", None, None)),
        ("smtp://mail.internal", ("mail.internal", 587, "starttls", None, None)),
        ("smtp://relay:25?starttls=false", ("relay", 25, "none", None, None)),
        ("smtps://a%40b:p%3Aw@[::1]:2465", ("::1", 2465, "tls", "a@b", "p:w")),
        ("smtps://h?ssl_ca_certs=/etc/ca%20s.pem", ("h", 465, "tls", None, None)),
    ],
)
def test_smtp_url_forms(tmp_path: Path, url: str, expected: tuple[object, ...]) -> None:
    [email] = load(
        tmp_path, f'[[notify]]\nkind = "email"\nsmtp_url = "{url}"\nto = "a@example.com"\n'
    ).alerts.targets
    assert isinstance(email, EmailTarget)
    assert (email.host, email.port, email.security, email.username, email.password) == expected
    assert email.to == ("a@example.com",)


def test_slack_format_and_zero_repeat(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        """
        [alerts]
        repeat = "0s"
        attempts = 5
        timeout = "3s"
        [alerts.rules.cluster_down]
        for = "0s"
        [[notify]]
        kind = "webhook"
        url = "http://127.0.0.1:9000/hook"
        format = "slack"
        """,
    )
    assert settings.alerts.repeat_s == 0 and settings.alerts.attempts == 5
    assert settings.alerts.timeout_s == 3
    assert settings.alerts.rules[CLUSTER_DOWN].for_s == 0
    assert settings.alerts.targets == (
        WebhookTarget(url="http://127.0.0.1:9000/hook", format="slack"),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[alerts.rules.cluster_gone]\nfor = '1m'\n",
            "alerts.rules: unknown rule 'cluster_gone' (cluster_down, restart_loop, "
            "reincarnation_storm, stuck, queue_full, redis_unreachable)",
        ),
        (
            "[alerts.rules.cluster_down]\nfor = '2x'\n",
            "alerts.rules.cluster_down.for: cannot read '2x' as a duration like 30s, 2m or 4h",
        ),
        (
            "[alerts.rules.cluster_down]\nfor = 60\n",
            "alerts.rules.cluster_down.for must be a duration like 30s, 2m or 4h (a string)",
        ),
        (
            "[alerts.rules.cluster_down]\ncount = 3\n",
            "unknown setting alerts.rules.cluster_down.count "
            "(alerts.rules.cluster_down takes enabled, for)",
        ),
        (
            "[alerts.rules.restart_loop]\nfor = '1m'\n",
            "unknown setting alerts.rules.restart_loop.for "
            "(alerts.rules.restart_loop takes enabled, count, window)",
        ),
        (
            "[alerts.rules.restart_loop]\ncount = 0\n",
            "alerts.rules.restart_loop.count must be a whole number, 1 or more",
        ),
        (
            "[alerts.rules.restart_loop]\nwindow = '0s'\n",
            "alerts.rules.restart_loop.window must be longer than 0s",
        ),
        (
            "[alerts.rules.stuck]\nenabled = 'no'\n",
            "alerts.rules.stuck.enabled must be true or false",
        ),
        (
            "[alerts]\nrepeat = 'daily'\n",
            "alerts.repeat: cannot read 'daily' as a duration like 30s, 2m or 4h",
        ),
        ("[alerts]\nattempts = 0\n", "alerts.attempts must be a whole number from 1 to 10"),
        (
            "[alerts]\nsnooze = '1h'\n",
            "unknown setting alerts.snooze (alerts takes repeat, timeout, attempts, rules)",
        ),
        ("alerts = 3\n", "alerts must be a table ([alerts])"),
        ("notify = 3\n", "notify must be an array of tables ([[notify]])"),
        (
            "[[notify]]\nkind = 'sms'\n",
            "notify[0].kind: 'sms' is not one of webhook, command, email",
        ),
        (
            "[[notify]]\nurl = 'https://h/'\n",
            "notify[0].kind: missing is not one of webhook, command, email",
        ),
        (
            f"[[notify]]\nkind = 'webhook'\nurl = 'ftp://h/{SENTINEL}'\n",
            "notify[0].url must be an http:// or https:// URL",
        ),
        (
            f"[[notify]]\nkind = 'webhook'\nurl = 'https://u:{SENTINEL}@h/'\n",
            "notify[0].url: put credentials in headers, not in the URL",
        ),
        (
            "[[notify]]\nkind = 'webhook'\nurl = 'https://h/'\nformat = 'teams'\n",
            "notify[0].format: 'teams' is not one of alertmanager, slack",
        ),
        (
            "[[notify]]\nkind = 'webhook'\nurl = 'https://h/'\nheaders = { X = 1 }\n",
            'notify[0].headers must be a table of strings (name = "value")',
        ),
        (
            "[[notify]]\nkind = 'webhook'\nurl = 'https://h/'\n"
            f'headers = {{ Authorization = "Bearer {SENTINEL}\\r\\nX-Evil: 1" }}\n',
            "notify[0].headers: 'Authorization' is not a valid header line",
        ),
        (
            "[[notify]]\nkind = 'webhook'\nurl = 'https://h/'\nargv = ['x']\n",
            "unknown setting notify[0].argv (notify[0] takes kind, url, format, headers)",
        ),
        (
            "[[notify]]\nkind = 'command'\nargv = []\n",
            "notify[0].argv must be a non-empty list of non-empty strings",
        ),
        (
            f"[[notify]]\nkind = 'email'\nsmtp_url = 'imap://u:{SENTINEL}@h'\nto = 'a@b'\n",
            "notify[0].smtp_url must be smtp://[user:password@]host[:port] or smtps://…",
        ),
        (
            f"[[notify]]\nkind = 'email'\nsmtp_url = 'smtp://u:{SENTINEL}@h:99999'\nto = 'a@b'\n",
            "notify[0].smtp_url: cannot read its host and port",
        ),
        (
            f"[[notify]]\nkind = 'email'\nsmtp_url = 'smtp://u:{SENTINEL}@h?starttls=false'\n"
            "to = 'a@b'\n",
            "notify[0].smtp_url: a login needs TLS (smtps://, or drop starttls=false)",
        ),
        (
            "[[notify]]\nkind = 'email'\nsmtp_url = 'smtp://h?tls=1'\nto = 'a@b'\n",
            "notify[0].smtp_url: unknown option 'tls' (starttls, ssl_ca_certs)",
        ),
        (
            "[[notify]]\nkind = 'email'\nsmtp_url = 'smtp://h'\nto = []\n",
            "notify[0].to must be an address or a list of addresses",
        ),
        (
            "[[notify]]\nkind = 'email'\nsmtp_url = 'smtp://h'\nto = 'a@b'\nfrom = 'me'\n",
            "notify[0].from must be an address",
        ),
        (
            "[[notify]]\nkind = 'command'\nargv = ['x']\n[[notify]]\nkind = 'pager'\n",
            "notify[1].kind: 'pager' is not one of webhook, command, email",
        ),
    ],
)
def test_bad_settings_are_one_line_naming_the_setting(
    tmp_path: Path, text: str, message: str
) -> None:
    assert error_of(tmp_path, text) == message


def test_smtp_private_ca(tmp_path: Path) -> None:
    text = '[[notify]]\nkind = "email"\nsmtp_url = "smtps://h?ssl_ca_certs=/etc/ca%20s.pem"\n'
    [email] = load(tmp_path, text + 'to = "a@example.com"\n').alerts.targets
    assert isinstance(email, EmailTarget) and email.ca_certs == "/etc/ca s.pem"
    plain = '[[notify]]\nkind = "email"\nsmtp_url = "smtp://h?starttls=false&ssl_ca_certs=/c"\n'
    assert error_of(tmp_path, plain + 'to = "a@b"\n') == (
        "notify[0].smtp_url: ssl_ca_certs needs TLS (smtps://, or drop starttls=false)"
    )
