"""Collector-side alerting with real Prometheus: the shipped rules, unit-tested by promtool, and
live: Prometheus scrapes an instrumented app's OTel Prometheus exporter and the alerts fire.

The live run uses a copy of the shipped rules with short windows and no `for:` (the expressions
are otherwise the shipped ones), a 1 s scrape and evaluation interval, and the delivery app in
serving mode (a sound and a NaN-broken generate call every second, zero-code instrumented with
`--metrics_exporter prometheus`). Every metric name the rules and the Grafana dashboard use must
be one the real exporter exposes, and every dashboard query must run on Prometheus with data.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.delivery import (
    COLLECTOR_CONFIG, LOOPBACK, app_env, background, free_port, instrumented_app, log_tail, require_binary,
    wait_for_port,
)

RULES = COLLECTOR_CONFIG / "prometheus" / "rules" / "corevital.rules.yml"
RULE_TESTS = COLLECTOR_CONFIG / "prometheus" / "tests" / "corevital.rules.test.yml"
DASHBOARD = COLLECTOR_CONFIG / "grafana" / "dashboards" / "corevital.json"
JOB = "corevital-app"
MODEL = "GPT2LMHeadModel"
SHORT_WINDOW = "10s"
EXPECTED_FIRING = {"CoreVitalNaNOrInf", "CoreVitalHighRiskGenerations", "CoreVitalRiskP95High"}
APP_START_TIMEOUT_S = 90
ALERT_TIMEOUT_S = 60
RULE_EVALUATION_S = 1.0
MIN_CALLS_IN_WINDOW = 6  # calls alternate sound/NaN: from six calls on, a window's NaN share is within 0.08 of 0.5
METRIC_NAME = re.compile(r"\b((?:corevital|gen_ai)_\w+)\s*[{\[]")  # a metric selector, not a label


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_binary("promtool"), *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_shipped_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_promtool_unit_tests_of_the_shipped_rules_pass():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def fast_rules() -> dict:
    """The shipped rules with every range window and offset set to SHORT_WINDOW and no pending period."""
    groups = yaml.safe_load(RULES.read_text())
    for group in groups["groups"]:
        for rule in group["rules"]:
            expr = re.sub(r"\[\d+[smhd]\]", f"[{SHORT_WINDOW}]", rule["expr"])
            rule["expr"] = re.sub(r"offset \d+[smhd]", f"offset {SHORT_WINDOW}", expr)
            if "for" in rule:
                rule["for"] = "0s"
    return groups


@dataclass
class Live:
    app_port: int
    prometheus: str  # base URL
    workdir: Path


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_until_ready(base_url: str, process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"prometheus exited {process.returncode}"
        try:
            with urllib.request.urlopen(f"{base_url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # refused, or 503 while the TSDB opens
            pass
        time.sleep(0.2)
    raise AssertionError(f"prometheus at {base_url} not ready within {timeout_s} s")


def query(live: Live, promql: str) -> dict:
    return get_json(f"{live.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    prometheus_binary = require_binary("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    app_port, prometheus_port = free_port(), free_port()
    (workdir / "rules.yml").write_text(yaml.safe_dump(fast_rules(), sort_keys=False))
    (workdir / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": f"{RULE_EVALUATION_S:g}s", "evaluation_interval": f"{RULE_EVALUATION_S:g}s"},
        "rule_files": [str(workdir / "rules.yml")],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"{LOOPBACK}:{app_port}"]}]}],
    }))
    app_command = instrumented_app("--serve", "120", "--interval", "1", traces="none", metrics="prometheus")
    env = app_env(OTEL_EXPORTER_PROMETHEUS_HOST=LOOPBACK, OTEL_EXPORTER_PROMETHEUS_PORT=str(app_port))
    prometheus_command = [
        prometheus_binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={LOOPBACK}:{prometheus_port}",
    ]
    with background(app_command, workdir / "app.log", env=env, stdin=subprocess.PIPE) as app:
        wait_for_port(app_port, app, timeout_s=APP_START_TIMEOUT_S)
        with background(prometheus_command, workdir / "prometheus.log") as prometheus:
            base_url = f"http://{LOOPBACK}:{prometheus_port}"
            wait_until_ready(base_url, prometheus)
            yield Live(app_port=app_port, prometheus=base_url, workdir=workdir)
        app.stdin.close()  # the app's signal to stop serving


@pytest.fixture(scope="module")
def fired(live) -> list[dict]:
    deadline = time.monotonic() + ALERT_TIMEOUT_S
    alerts: list[dict] = []
    while time.monotonic() < deadline:
        alerts = get_json(f"{live.prometheus}/api/v1/alerts")["data"]["alerts"]
        if EXPECTED_FIRING <= {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}:
            return alerts
        time.sleep(0.5)
    pytest.fail(
        f"alerts not firing within {ALERT_TIMEOUT_S} s: {[(a['labels']['alertname'], a['state']) for a in alerts]}\n"
        f"--- app log\n{log_tail(live.workdir / 'app.log')}\n--- prometheus log\n{log_tail(live.workdir / 'prometheus.log')}"
    )


def test_alerts_fire_on_nan_and_high_risk_generations(fired):
    firing = [a for a in fired if a["state"] == "firing"]
    for name in EXPECTED_FIRING:
        (alert,) = [a for a in firing if a["labels"]["alertname"] == name and a["labels"].get("corevital_health_flag")
                    in (None, "nan_detected")]
        assert alert["labels"]["job"] == JOB
        assert alert["labels"]["gen_ai_request_model"] == MODEL
        assert MODEL in alert["annotations"]["summary"]
    severities = {a["labels"]["alertname"]: a["labels"]["severity"] for a in firing}
    assert severities["CoreVitalNaNOrInf"] == "critical"
    # The sound call never loops and no Inf is produced: those alerts stay silent.
    assert not [a for a in firing if a["labels"]["alertname"] == "CoreVitalRepetitionLoops"]
    assert not [a for a in firing if a["labels"].get("corevital_health_flag") == "inf_detected"]


def calls_in_window(live: Live) -> float:
    result = query(live, f'sum(increase(corevital_risk_score_count{{job="{JOB}"}}[{SHORT_WINDOW}]))')["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def test_recorded_high_risk_ratio_matches_the_traffic(live, fired):
    # Every round is one sound call (risk ~0.02) and one NaN call (risk 1.0): half are high-risk once
    # the window holds several rounds. The alerts fire on the very first NaN call, when a window may
    # hold that call alone (ratio 1.0), so wait for MIN_CALLS_IN_WINDOW calls and one more evaluation.
    deadline = time.monotonic() + ALERT_TIMEOUT_S
    while (calls := calls_in_window(live)) < MIN_CALLS_IN_WINDOW:
        assert time.monotonic() < deadline, f"only {calls} calls in the last {SHORT_WINDOW}"
        time.sleep(0.5)
    time.sleep(RULE_EVALUATION_S * 1.5)
    (sample,) = query(live, f'corevital:high_risk_ratio:rate5m{{job="{JOB}"}}')["data"]["result"]
    assert float(sample["value"][1]) == pytest.approx(0.5, abs=0.15)


def exposed_metric_names(live: Live) -> set[str]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{live.app_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def dashboard_prometheus_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == "prometheus"
    ]


def test_rules_and_dashboard_use_names_the_real_exporter_exposes(live, fired):
    exposed = exposed_metric_names(live)
    rule_exprs = [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    used = {name for expr in rule_exprs + dashboard_prometheus_queries() for name in METRIC_NAME.findall(expr)}
    assert used, "no metric names found in the rules and the dashboard"
    assert used <= exposed, f"not exposed by the OTel Prometheus exporter: {sorted(used - exposed)}"


def as_instant_query(expr: str) -> str:
    """A dashboard expression with Grafana's variables set as the dashboard sets them for 'All'."""
    for variable, value in (("$__rate_interval", SHORT_WINDOW), ("$__range", "1m"), ("$job", ".*"), ("$model", ".*")):
        expr = expr.replace(variable, value)
    return expr


@pytest.mark.parametrize("expr", dashboard_prometheus_queries())
def test_dashboard_query_returns_data(live, fired, expr):
    answer = query(live, as_instant_query(expr))
    assert answer["status"] == "success", answer
    assert answer["data"]["result"], f"no data for: {as_instant_query(expr)}"
