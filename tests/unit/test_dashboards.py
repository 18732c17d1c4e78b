"""The Grafana dashboards of deploy/: each parses, names the provisioned datasource, and every
metric its queries use is one the code defines (a renamed metric fails here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
SOURCES = ("cityvitals", "ingest", "streams", "sinks", "device_registry", "wiring")


def defined_metrics() -> set[str]:
    """Every series name the code exposes, read from its source: ``Counter|Gauge|Histogram(
    "cityvitals_...")``, and per stage (``StageMetrics("x", ...)`` or a subclass's
    ``super().__init__("x", ...)``) the stage toolkit's own series and the file's
    ``.counter("name")`` / ``.gauge("name")`` / ``.histogram("name")``."""
    stage_src = (ROOT / "cityvitals" / "stage.py").read_text()
    per_stage = re.findall(r'f"cityvitals_\{stage\}_(\w+)"', stage_src)
    names: set[str] = set()
    for package in SOURCES:
        for path in (ROOT / package).rglob("*.py"):
            src = path.read_text()
            for kind, name in re.findall(
                r'\b(Counter|Gauge|Histogram)\(\s*"(cityvitals_\w+)"', src
            ):
                names |= exposed(kind, name)
            own = re.findall(r'super\(\)\.__init__\(\s*"(\w+)",', src)
            stages = own + re.findall(r'StageMetrics\(\s*"(\w+)",', src)
            extras = re.findall(r'\.(counter|gauge|histogram)\(\s*"(\w+)"', src)
            for stage in stages:
                names |= {f"cityvitals_{stage}_{suffix}" for suffix in per_stage}
            # A subclass's extra series are its own stage's (not those of a StageMetrics it holds).
            for stage in own or stages:
                for kind, name in extras:
                    names |= exposed(kind.capitalize(), f"cityvitals_{stage}_{name}")
    return names


def exposed(kind: str, name: str) -> set[str]:
    """The series names prometheus_client exposes for a metric."""
    if kind == "Counter":
        return {name if name.endswith("_total") else f"{name}_total"}
    if kind == "Histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


def expressions(node: Any) -> list[str]:
    """Every PromQL text of a dashboard: targets' ``expr`` and template variables' queries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(expressions(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(expressions(item))
    return found


def test_the_scan_finds_the_metrics_the_docs_name() -> None:
    names = defined_metrics()
    assert {
        "cityvitals_ingest_received_total",
        "cityvitals_sinks_rejected_total",
        "cityvitals_incidents_open",
        "cityvitals_incidents_dispatched_total",
        "cityvitals_indicator",
        "cityvitals_indicator_coverage",
        "cityvitals_ingest_batch_size_bucket",
        "cityvitals_api_requests_total",
        "cityvitals_notify_deliveries_total",
    } <= names
    assert "cityvitals_incidents_dispatched" not in names
    assert "cityvitals_incidents_desk_rejected_total" in names
    assert "cityvitals_incidents_desk_opened_total" not in names


def test_the_three_dashboards_are_provisioned() -> None:
    assert [d.stem for d in DASHBOARDS] == ["incidents", "pipeline", "vital-signs"]
    (provider,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "cityvitals.yaml").read_text()
    )["providers"]
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_metric_a_dashboard_queries_exists_in_the_code(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    exprs = expressions(dashboard)
    assert exprs, f"{path.name} queries nothing"
    used = {m for e in exprs for m in re.findall(r"\bcityvitals_\w+", e)}
    unknown = used - defined_metrics()
    assert not unknown, f"{path.name} queries metrics the code does not define: {sorted(unknown)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_uses_the_provisioned_datasource(path: Path) -> None:
    (source,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"]
    dashboard = json.loads(path.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dashboard["panels"]:
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": source["uid"]}


def test_every_long_running_cityvitals_service_is_scraped_and_probed() -> None:
    """Each compose service running a cityvitals service (the notifier included) sets its
    metrics port, Prometheus scrapes that port, and its health check probes that service."""
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    jobs = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    scraped = {
        target
        for job in jobs["scrape_configs"]
        for config in job.get("static_configs", ())
        for target in config["targets"]
    } | {
        f"{name}:{config['port']}"  # replicas found by DNS
        for job in jobs["scrape_configs"]
        for config in job.get("dns_sd_configs", ())
        for name in config["names"]
    }
    services = {}
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if command[:2] == ["cityvitals", "run"]:
            services[name] = command[2]
        elif command == ["cityvitals", "notify"]:
            services[name] = "notify"
    assert "notify" in services.values(), "compose runs no webhook notifier"
    for name, what in services.items():
        port = compose["services"][name]["environment"]["CITYVITALS_METRICS_PORT"]
        assert f"{name}:{port}" in scraped, f"{name}: port {port} is not scraped"
        assert compose["services"][name]["healthcheck"]["test"][-2:] == ["ready", what], name


PROMETHEUS = ROOT / "deploy" / "prometheus"


def test_the_pipeline_alerts_are_loaded_and_name_metrics_the_code_defines() -> None:
    """The on-call's alert rules: loaded by the compose Prometheus, each with a severity and a
    summary, and every metric they use one the code defines (a renamed metric fails here)."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    (group,) = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    rules = group["rules"]
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)) >= 8
    defined = defined_metrics()
    for rule in rules:
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        used = set(re.findall(r"\bcityvitals_\w+", rule["expr"]))
        assert used or "up{" in rule["expr"], rule["alert"]
        assert used <= defined, (rule["alert"], sorted(used - defined))
    ready = next(r for r in rules if r["alert"] == "CityvitalsServiceNotReady")
    services = ("ingest", "streams", "sinks", "liveness", "api")
    assert all(f"cityvitals_{s}_ready == 0" in ready["expr"] for s in services)
