"""The listener's settings: `listen` and `metrics_token` through every layer, bad values."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qwatch.config import ListenAddress, load_settings, parse_listen
from qwatch.errors import ConfigError
from tests.plugins.qcluster import SECRET_KEY

TOKEN = "tok-SENTINEL-5d1f"


@pytest.mark.parametrize(
    ("text", "address"),
    [
        (":9187", ListenAddress("127.0.0.1", 9187)),
        ("0.0.0.0:9187", ListenAddress("0.0.0.0", 9187)),
        ("metrics.internal:80", ListenAddress("metrics.internal", 80)),
        ("[::1]:9187", ListenAddress("::1", 9187)),
    ],
)
def test_listen_forms(text: str, address: ListenAddress) -> None:
    assert parse_listen(text, "--listen") == address


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("9187", "HOST:PORT or :PORT"),
        ("", "HOST:PORT or :PORT"),
        (":0", "from 1 to 65535"),
        (":70000", "from 1 to 65535"),
        (":http", "from 1 to 65535"),
        ("::1:9187", "in brackets"),
        ("a b:9187", "not a host name"),
    ],
)
def test_bad_listen_names_the_setting(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_listen(text, "QWATCH_LISTEN")
    assert str(caught.value).startswith("QWATCH_LISTEN")
    assert fragment in str(caught.value)


def test_layers_file_env_flag(tmp_path: Path) -> None:
    (tmp_path / "qwatch.toml").write_text(f'listen = ":9001"\nmetrics_token = "{TOKEN}"\n')
    settings = load_settings(environ={}, cwd=tmp_path)
    assert settings.listen == ListenAddress("127.0.0.1", 9001)
    assert settings.metrics_token == TOKEN and TOKEN not in repr(settings)
    settings = load_settings(
        environ={"QWATCH_LISTEN": ":9002", "QWATCH_METRICS_TOKEN": "other"}, cwd=tmp_path
    )
    assert (settings.listen, settings.metrics_token) == (ListenAddress("127.0.0.1", 9002), "other")
    settings = load_settings(environ={"QWATCH_LISTEN": ":9002"}, cwd=tmp_path, listen=":9003")
    assert settings.listen == ListenAddress("127.0.0.1", 9003)


def test_off_by_default(tmp_path: Path) -> None:
    settings = load_settings(environ={}, cwd=tmp_path)
    assert (settings.listen, settings.metrics_token) == (None, None)


def test_bad_file_value_names_the_file_key(tmp_path: Path) -> None:
    (tmp_path / "qwatch.toml").write_text("listen = 9187\n")
    with pytest.raises(ConfigError, match=r"^qwatch.toml: listen must be a non-empty string$"):
        load_settings(environ={}, cwd=tmp_path)
    (tmp_path / "qwatch.toml").write_text('listen = "9187"\n')
    with pytest.raises(ConfigError, match=r"^qwatch.toml: listen must be HOST:PORT"):
        load_settings(environ={}, cwd=tmp_path)


def daemon(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(__file__).parents[1]),
        "QWATCH_SECRET_KEY": SECRET_KEY,
        "QWATCH_REDIS_URL": "redis://127.0.0.1:1/0",  # never reached: it exits first
        "QWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'h.sqlite3'}",
        "QWATCH_METRICS_TOKEN": TOKEN,
        "XDG_DATA_HOME": str(tmp_path),
    }
    return subprocess.run(
        [sys.executable, "-m", "qwatch", "daemon", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_bad_listen_and_busy_port_exit_2_before_anything_starts(tmp_path: Path) -> None:
    done = daemon("--listen", "nonsense", tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "qwatch: --listen must be HOST:PORT or :PORT (no port in 'nonsense')"
    ]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = daemon("--listen", f":{port}", "--log-level", "ERROR", tmp_path=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [f"qwatch: listen: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert TOKEN not in done.stderr
    assert not (tmp_path / "h.sqlite3").exists()  # nothing started: no history created
