"""deploy/: the alert rules under promtool, the dashboard's PromQL against a real Prometheus,
the systemd unit under systemd-analyze, and what the container recipe must say."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.plugins.prometheus_server import PROMTOOL, PrometheusServer

DEPLOY = Path(__file__).parents[1] / "deploy"
needs_promtool = pytest.mark.skipif(
    not Path(PROMTOOL).exists(), reason="promtool (apt prometheus) is not installed"
)


@needs_promtool
def test_alert_rules_check_and_pass_their_unit_tests():
    rules = DEPLOY / "prometheus"
    for args in (
        ["check", "rules", "qwatch-rules.yml"],
        ["test", "rules", "qwatch-rules.test.yml"],
    ):
        done = subprocess.run([PROMTOOL, *args], cwd=rules, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_rule_has_a_promtool_case():
    rules = (DEPLOY / "prometheus" / "qwatch-rules.yml").read_text()
    cases = (DEPLOY / "prometheus" / "qwatch-rules.test.yml").read_text()
    alerts = re.findall(r"- alert: (\w+)", rules)
    assert len(alerts) == 6
    for alert in alerts:
        assert f"alertname: {alert}" in cases, alert


def dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "qwatch.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(metric, label) is Grafana's; the series query behind it is the metric.
            inner = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["query"]["query"])
            assert inner, variable
            queries.append(inner.group(1))
    return queries


def grafana_to_promql(expr: str) -> str:
    """What Grafana sends for the dashboard's variables: every site, a 1 minute rate window."""
    return expr.replace("$site", ".*").replace("$__rate_interval", "1m")


def test_dashboard_promql_runs_on_a_real_prometheus(prometheus_server: PrometheusServer):
    queries = dashboard_queries()
    assert len(queries) > 10
    for expr in queries:
        assert "$" not in grafana_to_promql(expr), expr
        prometheus_server.api("query", query=grafana_to_promql(expr))  # asserts success


def test_dashboard_names_only_exported_metrics():
    from qwatch.serve.metrics import families
    from tests.serve_helpers import T0, snapshot, stat, state_after

    view = state_after(snapshot(T0, stat("a"), events={"appeared": 1})).view()
    exported = {family.name for family in families(view)} | {
        sample.name for family in families(view) for sample in family.samples
    }
    for expr in dashboard_queries():
        for name in re.findall(r"\bqwatch_\w+", expr):
            assert name in exported, name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies_and_is_hardened(tmp_path: Path):
    unit = (DEPLOY / "systemd" / "qwatch.service").read_text()
    for setting in (
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=qwatch",
        "NoNewPrivileges=yes",
        "QWATCH_DATABASE_URL=sqlite:////var/lib/qwatch/",
    ):
        assert setting in unit
    # verify checks that ExecStart exists: stand in for the installed /opt/qwatch/bin/qwatch.
    stand_in = tmp_path / "qwatch"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    copy = tmp_path / "qwatch.service"
    copy.write_text(unit.replace("/opt/qwatch/bin/qwatch", str(stand_in)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stdout + done.stderr
    # systemd's own exposure score, 0 (locked down) to 10: "OK" is below 2.
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-800:] + done.stderr


def test_container_recipe_installs_the_wheel_and_runs_the_daemon():
    # Not built here: no container engine runs on the test machines (README says so).
    text = (DEPLOY / "Containerfile").read_text()
    assert "python -m build --wheel" in text and "pip install --no-cache-dir /tmp/*.whl" in text
    assert 'ENTRYPOINT ["qwatch"]' in text and 'CMD ["daemon"]' in text
    assert "USER qwatch" in text and "QWATCH_LISTEN=0.0.0.0:9187" in text
