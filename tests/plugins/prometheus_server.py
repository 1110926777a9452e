"""A real `prometheus` server (Debian's package) for tests, one per session.

Debian's package would start its own service; the tests never use it. They run the binary
themselves on a free loopback port with a temp config and storage dir, scraping every
second whatever targets a test lists (file service discovery, re-read within a second),
with the alert rules of deploy/prometheus loaded, and stop it by pid at the end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, stop_process

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "qwatch-rules.yml"
SCRAPE_TOKEN = "prometheus-test-scrape-token"
START_TIMEOUT_S = 30.0

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
scrape_configs:
  - job_name: qwatch
    authorization:
      credentials_file: {token_file}
    file_sd_configs:
      - files: [{targets}]
        refresh_interval: 1s
"""


class PrometheusServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.targets_file = workdir / "targets.json"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        self.targets_file.write_text("[]")
        token_file = self.workdir / "token"
        token_file.write_text(SCRAPE_TOKEN)
        config = self.workdir / "prometheus.yml"
        config.write_text(
            CONFIG.format(rules=RULES, token_file=token_file, targets=self.targets_file)
        )
        log = (self.workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.workdir / "prometheus.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"prometheus did not start:\n{tail}")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 15)

    def scrape(self, *addresses: str) -> None:
        """Scrape these host:port targets from now on (and no others)."""
        self.targets_file.write_text(json.dumps([{"targets": list(addresses)}]))

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The one number an instant query gives, or None when it gives nothing."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus")).start()
    try:
        yield server
    finally:
        server.stop()
