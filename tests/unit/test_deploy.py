"""docker-compose.yml and deploy/ checked by parsing (no Docker engine needed): every
service has what it needs, every query names a metric we export, alerts really fire
(promtool: required under CI=true)."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from redundancy.config import load_settings
from redundancy.observability.metrics import exported_names
from tests.services import require

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
ALERTS = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
MIXIN_ALERTS_FILE = DEPLOY / "prometheus" / "celery-mixin-alerts.yml"
MIXIN_ALERTS = yaml.safe_load(MIXIN_ALERTS_FILE.read_text())
DASHBOARDS_DIR = DEPLOY / "grafana" / "dashboards"
DASHBOARD = json.loads((DASHBOARDS_DIR / "content-redundancy-detector.json").read_text())
MIXIN_DASHBOARDS = ("celery-tasks-overview.json", "celery-tasks-by-task.json")

UPSTREAM_SHA256 = {
    # danihodovic/celery-exporter at 95e8e492f0cb300247432d664ea9732bfdf57ad7, celery-mixin/
    "prometheus_alerts.yaml": "809a01393aa53084bd7883b574a242667e30cff76c9585015c5844514dab9134",
    "celery-tasks-overview.json": (
        "f898c9ec0041b1b89cdb2a5da9172af74d136fcd67383891462a6e2e438efe9e"
    ),
    "celery-tasks-by-task.json": "27dc9bc96e974696c8f141a35309d47699310318e1427427bca54c07f2a5531f",
}
"""The community files, vendored unchanged (their expressions are what users know)."""

ORIGINAL_ENV = (  # the original service's names (docs/architecture.md §7)
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "MESSAGE_BROKER_TYPE",
    "REDIS_URL",
    "RABBITMQ_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "REDIS_CACHE_URL",
    "CACHE_DEFAULT_TTL",
    "CACHE_MAX_CONNECTIONS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "SERVICE_NAME",
)
APP_SERVICES = ("worker", "worker-jobs", "flower", "cli", "api", "handlers")

METRIC_MODULES = (
    "redundancy.events.metrics",
    "redundancy.cache.metrics",
    "redundancy.api.observability",
)
"""Modules whose metrics the dashboard and alerts use besides observability's own."""
PROMETHEUS_OWN = {"up"}


def known_metrics() -> set[str]:
    for module in METRIC_MODULES:
        importlib.import_module(module)  # registers its metrics in the default registry
    return exported_names() | PROMETHEUS_OWN


_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, keywords, labels removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = re.findall(r"(?<![\w$.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)
    return {w for w in words if w.lower() not in _PROMQL_WORDS}


def test_promql_name_extraction():
    expr = (
        "histogram_quantile(0.95, sum by (le, name) (rate(celery_task_runtime_bucket"
        '{queue_name="a b"}[$__rate_interval]))) / on(name) group_left up > bool 1'
    )
    assert metric_names(expr) == {"celery_task_runtime_bucket", "up"}


def _resolve(value: Any) -> str:
    """Compose interpolation with the documented defaults; required ones get a sample."""

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if op == ":-":
            return arg
        return {
            "RABBITMQ_PASSWORD": "secret",
            "FLOWER_BASIC_AUTH": "ops:secret",
            "GRAFANA_ADMIN_PASSWORD": "secret",
            "EVENTS_SIGNING_KEY": "a-signing-key",
        }[name]

    return re.sub(r"\$\{(\w+)(:-|:\?)([^}]*)\}", sub, str(value))


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: use the mapping form for environment"
    return {k: _resolve(v) for k, v in env.items()}


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_get_every_design_variable_and_valid_settings(service):
    env = _env(service)
    missing = [v for v in ORIGINAL_ENV if v not in env]
    assert not missing, f"{service} lacks {missing}"
    # the values pass the app's own validation (a bad one would stop the container)
    settings = load_settings(**{k.lower(): v for k, v in env.items() if v != ""})
    assert not settings.embedded
    # every URL points at a service of this file
    for name, value in env.items():
        if "://" in value:
            host = urlsplit(value).hostname
            assert host in SERVICES, f"{service}: {name} points at unknown host {host}"
    kafka_host = env["KAFKA_BOOTSTRAP_SERVERS"].split(":")[0]
    assert kafka_host in SERVICES


def test_services_exist_depend_on_healthy_services_and_mount_real_files():
    assert {
        "redis-broker",
        "redis-cache",
        "rabbitmq",
        "kafka",
        "worker",
        "flower",
        "api",
        "prometheus",
        "grafana",
        "otel-collector",
        "jaeger",
    } <= set(SERVICES)
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        depends = service.get("depends_on", {})
        for target in depends:
            assert target in SERVICES, f"{name} depends on unknown {target}"
            if isinstance(depends, dict) and depends[target].get("condition") == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{target} has no healthcheck"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    for name in (
        "redis-broker",
        "redis-cache",
        "rabbitmq",
        "kafka",
        "worker",
        "flower",
        "api",
        "prometheus",
        "grafana",
    ):
        assert "healthcheck" in SERVICES[name], f"{name} has no healthcheck"


def test_brokers_are_configured_for_their_roles():
    broker = " ".join(SERVICES["redis-broker"]["command"])
    assert "--appendonly yes" in broker and "--maxmemory-policy noeviction" in broker
    cache = " ".join(SERVICES["redis-cache"]["command"])
    assert "--maxmemory-policy allkeys-lru" in cache and "--maxmemory " in cache
    assert "management" in SERVICES["rabbitmq"]["image"]
    kafka = _env("kafka")
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in k for k in kafka)
    assert _env("flower")["FLOWER_BASIC_AUTH"] == "ops:secret"  # required, from .env
    assert "--metrics-port" in SERVICES["worker"]["command"]


def test_prometheus_scrapes_every_worker_replica_and_loads_the_rules():
    worker_port = SERVICES["worker"]["command"]
    port = int(worker_port[worker_port.index("--metrics-port") + 1])
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    # celery-mixin selects job=~".*celery.*": the workers' job is named to match
    assert re.fullmatch(".*celery.*", "celery") and not re.fullmatch(".*celery.*", "flower")
    dns = jobs["celery"]["dns_sd_configs"][0]
    assert dns["names"] == ["worker", "worker-jobs"] and dns["port"] == port
    assert SERVICES["worker-jobs"]["command"][-2:] == ["--metrics-port", str(port)]
    for job in jobs.values():
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host = target.split(":")[0]
                assert host == "localhost" or host in SERVICES, target
    assert PROMETHEUS["rule_files"] == ["celery-mixin-alerts.yml", "alerts.yml"]
    for rule_file in PROMETHEUS["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()


def test_api_service_serves_on_the_port_prometheus_scrapes():
    command = SERVICES["api"]["command"]
    port = int(command[command.index("--port") + 1])
    assert command[:2] == ["crd", "serve"] and "--workers" in command
    assert f"127.0.0.1:{port}:{port}" in SERVICES["api"]["ports"]
    assert f"{port}/readyz" in " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert _env("api")["METRICS_DIR"] in SERVICES["api"]["tmpfs"][0]  # multiprocess files
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    dns = jobs["crd-api"]["dns_sd_configs"][0]
    assert dns["names"] == ["api"] and dns["port"] == port


def test_handlers_service_runs_the_handlers_with_a_key_and_is_scraped():
    command = SERVICES["handlers"]["command"]
    assert command[:3] == ["crd", "events", "handle"]
    port = int(command[command.index("--metrics-port") + 1])
    env = _env("handlers")
    assert env["EVENTS_SIGNING_KEY"]  # consumers verify by default: no key, no start
    from redundancy.config import load_settings

    load_settings(webhook_subscriptions=env["WEBHOOK_SUBSCRIPTIONS"] or "[]")
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    dns = jobs["crd-handlers"]["dns_sd_configs"][0]
    assert dns["names"] == ["handlers"] and dns["port"] == port
    assert SERVICES["handlers"]["restart"] == "unless-stopped"


def test_community_rules_and_dashboards_are_vendored_unchanged():
    # the alerts file is upstream's, below a comment header naming its source
    body = MIXIN_ALERTS_FILE.read_text()
    body = "".join(line for line in body.splitlines(keepends=True) if not line.startswith("#"))
    digest = hashlib.sha256(body.encode()).hexdigest()
    assert digest == UPSTREAM_SHA256["prometheus_alerts.yaml"]
    for name in MIXIN_DASHBOARDS:
        digest = hashlib.sha256((DASHBOARDS_DIR / name).read_bytes()).hexdigest()
        assert digest == UPSTREAM_SHA256[name], name
    assert (DEPLOY / "celery-mixin.LICENSE.md").read_text().startswith("MIT License")


def test_alert_rules_cover_the_runbook_and_use_exported_metrics():
    rules = {r["alert"]: r for f in (MIXIN_ALERTS, ALERTS) for g in f["groups"] for r in g["rules"]}
    assert {
        "CeleryTaskHighFailRate",
        "CeleryHighQueueLength",
        "CeleryWorkerDown",
        "RedundancyWorkerUnreachable",
        "RedundancyWorkerGone",
        "RedundancyNoWorkers",
        "RedundancyOutboxBacklog",
        "RedundancyCacheHitRateLow",
        "RedundancyApiErrorRate",
        "RedundancyApiLatencyHigh",
        "RedundancyMessagesRejected",
        "RedundancyEventsDeadLettered",
        "RedundancyOutboxStalled",
        "RedundancyWebhookDeliveriesFailing",
        "RedundancyCacheValuesRejected",
        "RedundancyCorpusEventsSkipped",
    } <= set(rules)
    known = known_metrics()
    for name, rule in rules.items():
        used = metric_names(rule["expr"])
        assert used and used <= known, f"{name} uses unknown {used - known}"
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert {"summary", "description"} <= set(rule["annotations"])


def _panels(dashboard: dict[str, Any] = DASHBOARD) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found += _panels(panel) if "panels" in panel else []
        if panel["type"] != "row":
            found.append(panel)
    return found


def dashboard_queries(name: str) -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every query of a provisioned dashboard."""
    dashboard = json.loads((DASHBOARDS_DIR / name).read_text())
    return [(p["title"], t["expr"]) for p in _panels(dashboard) for t in p.get("targets", [])]


@pytest.mark.parametrize("name", ["content-redundancy-detector.json", *MIXIN_DASHBOARDS])
def test_dashboard_queries_name_only_metrics_we_export(name):
    known = known_metrics()
    queries = dashboard_queries(name)
    assert queries
    for title, expr in queries:
        used = metric_names(expr)
        assert used and used <= known, f"{title}: unknown {used - known}"


def test_our_dashboard_has_job_queue_and_task_variables_and_no_fixed_datasource():
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "queue", "task", "api_job"} <= set(variables)
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            # the HTTP API's series come from its own scrape job (``crd-api``)
            job = "$api_job" if "http_request" in target["expr"] else "$job"
            assert f'job=~"{job}"' in target["expr"], panel["title"]
            if "celery_task_" in target["expr"]:
                assert (
                    'name=~"$task"' in target["expr"] and 'queue_name=~"$queue"' in target["expr"]
                )


def test_dashboard_is_provisioned_and_laid_out():
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/datasources.yml").read_text()
    )
    uids = {d["uid"]: d for d in datasources["datasources"]}
    assert urlsplit(uids["prometheus"]["url"]).hostname in SERVICES
    assert urlsplit(uids["jaeger"]["url"]).hostname in SERVICES
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/dashboards.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in SERVICES["grafana"]["volumes"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    assert uids["prometheus"]["isDefault"]  # what the dashboards' datasource variable picks
    titles = " | ".join(p["title"].lower() for p in _panels())
    for topic in (
        "task rate",
        "error rate",
        "runtime percentiles",
        "queue depth",
        "cache hit rate",
        "event throughput",
        "outbox backlog",
        "request rate by endpoint",
        "api error rate",
    ):
        assert topic in titles, topic


def test_collector_receives_what_workers_send_and_exports_to_jaeger():
    config = yaml.safe_load((DEPLOY / "otel-collector" / "config.yaml").read_text())
    endpoint = urlsplit(_env("worker")["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.hostname == "otel-collector"
    http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert http.endswith(f":{endpoint.port}")  # OTLP/HTTP, which our exporter speaks
    exporter = config["exporters"]["otlp/jaeger"]["endpoint"]
    assert exporter.split(":")[0] in SERVICES
    assert config["service"]["pipelines"]["traces"] == {
        "receivers": ["otlp"],
        "processors": ["memory_limiter", "batch"],
        "exporters": ["otlp/jaeger"],
    }
    volumes = SERVICES["otel-collector"]["volumes"]
    assert any(v.startswith("./deploy/otel-collector/config.yaml:") for v in volumes)


@pytest.fixture
def promtool() -> str:
    """promtool's path: a missing one skips on a laptop and fails under CI=true."""
    path = shutil.which("promtool")
    require(path is not None, "promtool (Debian package prometheus)")
    assert path is not None
    return path


def test_promtool_accepts_the_config_and_rules(promtool):
    for args in (
        ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        ["check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"), str(MIXIN_ALERTS_FILE)],
    ):
        out = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


def test_alerts_fire_on_their_conditions_in_promtool_unit_tests(promtool):
    out = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=ROOT / "tests" / "deploy",
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


LONG_RUNNING = [
    name for name, service in SERVICES.items() if "tools" not in service.get("profiles", [])
]


def test_long_running_services_restart_and_images_are_pinned_to_a_patch_release():
    for name in LONG_RUNNING:
        assert SERVICES[name].get("restart") == "unless-stopped", name
    for name, service in SERVICES.items():
        image = service["image"]
        if image == "content-redundancy-detector:local":  # built from the Dockerfile
            continue
        assert re.search(r":v?\d+\.\d+\.\d+", image), f"{name}: {image} floats"
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert base and re.search(r":\d+\.\d+\.\d+", base.group(1)), "Dockerfile base floats"


def test_alerts_go_to_alertmanager():
    targets = [t for am in PROMETHEUS["alerting"]["alertmanagers"]
               for sc in am["static_configs"] for t in sc["targets"]]  # fmt: skip
    assert targets == ["alertmanager:9093"] and "alertmanager" in SERVICES
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    receivers = {r["name"] for r in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert all(route["receiver"] in receivers for route in routes)
    assert "./deploy/alertmanager:/etc/alertmanager:ro" in SERVICES["alertmanager"]["volumes"]


def test_the_worker_health_check_reads_its_own_metrics_port():
    command = SERVICES["worker"]["command"]
    port = command[command.index("--metrics-port") + 1]
    assert SERVICES["worker"]["healthcheck"]["test"] == [
        "CMD", "python", "-m", "redundancy.observability.health", port,
    ]  # fmt: skip


def test_every_alert_rule_has_a_promtool_test_where_it_fires_and_one_where_it_does_not():
    cases = yaml.safe_load((ROOT / "tests" / "deploy" / "alerts_test.yml").read_text())["tests"]
    checks = [c for case in cases for c in case.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in checks if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in checks if not c.get("exp_alerts")}
    rules = {r["alert"] for f in (MIXIN_ALERTS, ALERTS) for g in f["groups"] for r in g["rules"]}
    assert rules - fires == set(), "alerts never shown to fire"
    assert rules - quiet == set(), "alerts never shown to stay quiet"


def test_the_two_kinds_of_worker_consume_every_queue_between_them():
    from redundancy.names import QUEUES, SHORT_JOB_QUEUES

    def queues(service: str) -> set[str]:
        command = SERVICES[service]["command"]
        return set(command[command.index("--queues") + 1].split(","))

    # short jobs (four messages in hand) apart from long ones (one): nothing left unconsumed
    assert queues("worker") == set(SHORT_JOB_QUEUES)
    assert queues("worker-jobs") == set(QUEUES) - SHORT_JOB_QUEUES
    assert "healthcheck" in SERVICES["worker-jobs"]
