"""The observability profile is wired right: Prometheus scrapes every service, the alert rules and the
dashboard use metrics the code exports, each alert has a runbook section, and promtool accepts it all."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tweetshop_contracts.system import SYSTEM

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
PROMETHEUS_DIR = OBSERVABILITY / "prometheus"
RULES = PROMETHEUS_DIR / "rules" / "tweetshop.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "tweetshop.json"
DATASOURCES = OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
# The services Prometheus scrapes: the four with consumers (from the one declaration of the system).
SERVICE_PORTS = {service.name: service.port for service in SYSTEM.with_kafka()}
METRIC_NAME = re.compile(r"\b(?:tweetshop|checkout)_[a-z_]+\b")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = _yaml(ROOT / "docker-compose.yml")["services"]
    return services


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in _yaml(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def _exported_metric_names() -> set[str]:
    """Every sample name the services' code can export (the backbone's and checkout's own metrics)."""
    import checkout.metrics  # noqa: F401 - registers checkout's metrics
    import tracking.metrics  # noqa: F401 - the live streams' and couriers' metrics
    import tweetshop_platform.metrics  # noqa: F401
    import webapp.gateway  # noqa: F401 - the web app's gateway and stream metrics
    from prometheus_client import REGISTRY

    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    return names


def _slugs(markdown: str) -> set[str]:
    """GitHub's anchors of the headings."""
    return {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in markdown.splitlines()
        if line.startswith("#")
    }


def test_prometheus_scrapes_every_service_at_its_compose_address(compose_services: dict[str, Any]) -> None:
    config = _yaml(PROMETHEUS_DIR / "prometheus.yml")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "tweetshop")
    scraped = {cfg["labels"]["service"]: cfg["targets"] for cfg in job["static_configs"]}
    assert scraped == {name: [f"{name}:{port}"] for name, port in SERVICE_PORTS.items()}
    for name in SERVICE_PORTS:
        assert name in compose_services, f"Prometheus scrapes {name}, which docker-compose.yml does not run"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert sorted(PROMETHEUS_DIR.glob(config["rule_files"][0])) == [RULES]


def test_the_observability_profile_runs_prometheus_and_grafana_on_the_checked_in_files(
    compose_services: dict[str, Any],
) -> None:
    for name in ("prometheus", "grafana"):
        service = compose_services[name]
        assert service.get("profiles") == ["observability"], f"{name} must start only with the profile"
        for volume in service["volumes"]:
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_dir(), f"{name} mounts {source}, which does not exist"
    prometheus_mounts = {str(v).split(":")[1] for v in compose_services["prometheus"]["volumes"]}
    assert "/etc/prometheus" in prometheus_mounts
    grafana_mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in compose_services["grafana"]["volumes"]}
    dashboards_path = _yaml(OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "tweetshop.yml")["providers"][
        0
    ]["options"]["path"]
    assert grafana_mounts["./deploy/observability/grafana/dashboards"] == dashboards_path
    assert grafana_mounts["./deploy/observability/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    alerts = _alerts()
    names = {a["alert"] for a in alerts}
    wanted = {"ConsumerLagGrowing", "DeadLettersPending", "OutboxStuck", "OrdersOverdue", "OrdersNotSettling"}
    assert wanted <= names, f"missing alerts: {wanted - names}"
    anchors = _slugs(RUNBOOK.read_text(encoding="utf-8"))
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], alert["alert"]
        url = alert["annotations"]["runbook_url"]
        # Absolute: the external label runbook_url (RUNBOOK_URL, tests/deploy/test_observability.py) and the anchor.
        assert url == f"{{{{ $externalLabels.runbook_url }}}}#{alert['alert'].lower()}", url
        assert alert["alert"].lower() in anchors, f"docs/runbook.md has no section for {alert['alert']}"


def test_rules_and_dashboard_use_only_metrics_the_code_exports() -> None:
    exported = _exported_metric_names()
    exprs = [rule["expr"] for group in _yaml(RULES)["groups"] for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert {"tweetshop_consumer_lag", "tweetshop_dlq_pending_messages", "tweetshop_outbox_oldest_age_seconds"} <= used
    unknown = sorted(used - exported)
    assert not unknown, f"no code exports {unknown}"


def test_the_dashboard_shows_lag_throughput_errors_dead_letters_outbox_age_and_the_order_funnel() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in ("consumer lag", "throughput", "errors", "dlq", "outbox: age", "order funnel"):
        assert topic in titles, f"no panel about {topic}: {titles}"
    datasource_uid = _yaml(DATASOURCES)["datasources"][0]["uid"]
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource_uid, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus); the YAML checks above still ran")
    return found


def test_promtool_accepts_the_configuration_and_the_rules() -> None:
    promtool = _promtool()
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "rules/tweetshop.yml"]):
        result = subprocess.run(
            [promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_and_resolve_as_their_unit_tests_say() -> None:
    promtool = _promtool()
    result = subprocess.run(
        [promtool, "test", "rules", "tests/tweetshop_test.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
