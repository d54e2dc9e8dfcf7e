"""Structure of everything under collector-config/: Collector configs, compose file, Grafana, Prometheus.

No OpenTelemetry Collector (contrib) binary can be installed here (the registries have none with
these components), so the configs are checked the way the Collector resolves them: every
component a pipeline names is defined, every defined one is used, connectors join a traces and a
metrics pipeline, env placeholders use the ${env:NAME} syntax, and every corevital.* name they
(and the dashboard) filter on is one the instrumentation emits.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from opentelemetry_instrumentation_corevital.telemetry import attributes as attrs
from opentelemetry_instrumentation_corevital.telemetry import metrics as cv_metrics
from tests.support.delivery import COLLECTOR_CONFIG, require_binary

SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")
# Component types of the Collector contrib distribution that these configs may use.
KNOWN_TYPES = {
    "receivers": {"otlp", "prometheus"},
    "processors": {"batch", "memory_limiter", "tail_sampling", "resource", "transform", "attributes", "filter"},
    "exporters": {"otlp", "otlphttp", "prometheus", "prometheusremotewrite", "datadog", "debug", "loadbalancing"},
    "connectors": {"spanmetrics", "datadog"},
    "extensions": {"health_check", "basicauth", "bearertokenauth"},
}
BACKEND_CONFIGS = {"jaeger", "tempo", "langfuse", "phoenix", "datadog", "gateway", "stack"}
EMITTED_NAMES = {
    value for name, value in vars(attrs).items() if name.isupper() and isinstance(value, str)
} | {cv_metrics.RISK_SCORE, cv_metrics.LOGITS_ENTROPY, cv_metrics.HEALTH_FLAGS}
HEALTH_FLAG_ATTRIBUTES = {
    value for name, value in vars(attrs).items()
    if name.startswith("HEALTH_") and isinstance(value, str) and value.endswith("_detected")
}

ALL_YAML = sorted(p for p in COLLECTOR_CONFIG.rglob("*") if p.suffix in {".yml", ".yaml"})
COLLECTOR_CONFIGS = sorted(p for p in COLLECTOR_CONFIG.glob("*.yaml") if "service" in yaml.safe_load(p.read_text()))
COMPOSE = COLLECTOR_CONFIG / "docker-compose.yml"
DASHBOARD = COLLECTOR_CONFIG / "grafana" / "dashboards" / "corevital.json"
DATASOURCES = COLLECTOR_CONFIG / "grafana" / "provisioning" / "datasources" / "corevital.yaml"


def load(path: Path):
    return yaml.safe_load(path.read_text())


def rel(path: Path) -> str:
    return str(path.relative_to(COLLECTOR_CONFIG))


@pytest.mark.parametrize("path", ALL_YAML, ids=rel)
def test_yaml_parses_to_a_mapping(path):
    assert isinstance(load(path), dict), f"{rel(path)} is not a YAML mapping"


def test_a_collector_config_for_every_backend():
    assert {p.stem for p in COLLECTOR_CONFIGS} == BACKEND_CONFIGS


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=rel)
def test_collector_pipelines_reference_defined_components(path):
    config = load(path)
    assert set(config) <= set(SECTIONS) | {"service"}, f"unknown top-level keys in {rel(path)}"
    for section in SECTIONS:
        for component in config.get(section) or {}:
            kind = component.split("/")[0]
            assert kind in KNOWN_TYPES[section], f"{rel(path)}: unknown {section[:-1]} type {kind!r}"
    pipelines = config["service"]["pipelines"]
    assert pipelines, f"{rel(path)} has no pipelines"
    used = {section: set() for section in SECTIONS}
    connectors = set(config.get("connectors") or {})
    connector_ends = {name: set() for name in connectors}
    for pipeline_id, pipeline in pipelines.items():
        signal = pipeline_id.split("/")[0]
        assert signal in {"traces", "metrics", "logs"}, f"{rel(path)}: pipeline {pipeline_id}"
        assert pipeline.get("receivers") and pipeline.get("exporters"), f"{rel(path)}: {pipeline_id} is incomplete"
        for role in ("receivers", "processors", "exporters"):
            for name in pipeline.get(role, []):
                if name in connectors and role != "processors":
                    connector_ends[name].add((role, signal))
                    used["connectors"].add(name)
                    continue
                assert name in (config.get(role) or {}), f"{rel(path)}: {pipeline_id} uses undefined {role[:-1]} {name}"
                used[role].add(name)
        assert len(pipeline.get("processors", [])) == len(set(pipeline.get("processors", []))), pipeline_id
    for section in ("receivers", "processors", "exporters", "connectors"):
        unused = set(config.get(section) or {}) - used[section]
        assert not unused, f"{rel(path)}: {section} defined but never used: {sorted(unused)}"
    for name, ends in connector_ends.items():
        roles = {role for role, _ in ends}
        assert roles == {"receivers", "exporters"}, f"{rel(path)}: connector {name} must end one pipeline and start another"
    assert set(config["service"].get("extensions", [])) <= set(config.get("extensions") or {})


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=rel)
def test_collector_receives_otlp_grpc_and_http_with_a_memory_limiter(path):
    config = load(path)
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    for pipeline_id, pipeline in config["service"]["pipelines"].items():
        processors = pipeline.get("processors", [])
        assert processors and processors[0] == "memory_limiter", f"{rel(path)}: {pipeline_id} must start with memory_limiter"
        if "batch" in processors:
            assert processors[-1] == "batch", f"{rel(path)}: {pipeline_id}: batch goes last"


@pytest.mark.parametrize("path", COLLECTOR_CONFIGS, ids=rel)
def test_env_placeholders_use_collector_syntax(path):
    text = path.read_text()
    for placeholder in re.findall(r"\$\{[^}]*\}", text):
        assert re.fullmatch(r"\$\{env:[A-Z][A-Z0-9_]*(:-[^}]*)?\}", placeholder), f"{rel(path)}: {placeholder}"


def corevital_names(text: str) -> set[str]:
    return set(re.findall(r"corevital(?:\.[a-z_]+)+", text))


@pytest.mark.parametrize("path", [*COLLECTOR_CONFIGS, DASHBOARD], ids=rel)
def test_corevital_names_used_are_emitted_by_the_instrumentation(path):
    unknown = corevital_names(path.read_text()) - EMITTED_NAMES
    assert not unknown, f"{rel(path)} refers to names CoreVital does not emit: {sorted(unknown)}"


def test_gateway_keeps_risky_and_flagged_traces_and_samples_healthy_ones():
    config = load(COLLECTOR_CONFIG / "gateway.yaml")
    policies = config["processors"]["tail_sampling"]["policies"]
    by_type: dict[str, list] = {}
    for policy in policies:
        by_type.setdefault(policy["type"], []).append(policy)
    conditions = [c for p in by_type["ottl_condition"] for c in p["ottl_condition"]["span"]]
    assert f'attributes["{attrs.RISK_SCORE}"] >= ${{env:COREVITAL_RISK_THRESHOLD:-0.7}}' in conditions
    flagged = {p["boolean_attribute"]["key"] for p in by_type["boolean_attribute"] if p["boolean_attribute"]["value"] is True}
    assert flagged == HEALTH_FLAG_ATTRIBUTES
    (healthy,) = by_type["probabilistic"]
    assert "COREVITAL_HEALTHY_SAMPLING_PERCENT" in str(healthy["probabilistic"]["sampling_percentage"])
    pipelines = config["service"]["pipelines"]
    sampled = [p for p in pipelines.values() if "tail_sampling" in p.get("processors", [])]
    assert len(sampled) == 1 and sampled[0]["exporters"] == ["otlp/traces"]
    # spanmetrics sees every span: its pipeline does not sample.
    (metered,) = [p for p in pipelines.values() if "spanmetrics" in p["exporters"]]
    assert "tail_sampling" not in metered.get("processors", [])
    assert "prometheus" in pipelines["metrics"]["exporters"]


def test_langfuse_and_datadog_take_credentials_from_the_environment():
    langfuse = load(COLLECTOR_CONFIG / "langfuse.yaml")["exporters"]["otlphttp/langfuse"]
    assert langfuse["headers"]["Authorization"] == "Basic ${env:LANGFUSE_AUTH}"
    assert langfuse["endpoint"].startswith("${env:LANGFUSE_OTEL_ENDPOINT:-https://")
    datadog = load(COLLECTOR_CONFIG / "datadog.yaml")["exporters"]["datadog"]
    assert datadog["api"]["key"] == "${env:DD_API_KEY}"


def test_compose_stack_is_complete_and_consistent():
    compose = load(COMPOSE)
    services = compose["services"]
    assert set(services) == {"otel-collector", "jaeger", "tempo", "prometheus", "grafana"}
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (COLLECTOR_CONFIG / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose.get("volumes", {}), f"{name}: undeclared volume {source}"
        for dependency in service.get("depends_on", []):
            assert dependency in services
    (collector_config,) = [v.split(":")[0] for v in services["otel-collector"]["volumes"]]
    stack = load(COLLECTOR_CONFIG / collector_config)
    for exporter in stack["exporters"].values():
        if "endpoint" in exporter and not exporter["endpoint"].startswith("0.0.0.0"):
            assert exporter["endpoint"].split(":")[0] in services, exporter["endpoint"]
    prometheus = load(COLLECTOR_CONFIG / "prometheus" / "prometheus.yml")
    (target,) = [t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    host, port = target.split(":")
    assert host in services and stack["exporters"]["prometheus"]["endpoint"].endswith(f":{port}")


def test_grafana_dashboard_uses_provisioned_datasources_and_defined_variables():
    dashboard = json.loads(DASHBOARD.read_text())
    datasource_uids = {d["uid"]: d["type"] for d in load(DATASOURCES)["datasources"]}
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    kinds = set()
    for panel in dashboard["panels"]:
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24
        for target in panel.get("targets", []):
            source = target["datasource"]
            assert datasource_uids.get(source["uid"]) == source["type"], (panel["title"], source)
            kinds.add(source["type"])
            query = target.get("expr") or target.get("query")
            assert query, panel["title"]
            for variable in re.findall(r"\$(\w+)", query):
                assert variable.startswith("__") or variable in variables, (panel["title"], variable)
    assert kinds == {"prometheus", "tempo"}
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("risk", "flags", "entropy", "token usage", "latency"):
        assert topic in titles, f"dashboard has no {topic} panel"


def test_promtool_accepts_the_prometheus_config():
    result = subprocess.run(
        [require_binary("promtool"), "check", "config", "--syntax-only",
         str(COLLECTOR_CONFIG / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_tempo_listens_where_the_collector_and_grafana_expect_it():
    tempo = load(COLLECTOR_CONFIG / "tempo" / "tempo.yaml")
    otlp_port = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1]
    assert load(COLLECTOR_CONFIG / "stack.yaml")["exporters"]["otlp/tempo"]["endpoint"] == f"tempo:{otlp_port}"
    (datasource,) = [d for d in load(DATASOURCES)["datasources"] if d["type"] == "tempo"]
    assert datasource["url"] == f"http://tempo:{tempo['server']['http_listen_port']}"
    assert set(tempo["storage"]["trace"]) >= {"backend", "wal", "local"}
