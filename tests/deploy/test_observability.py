"""The `observability` compose profile: alerts that reach someone, runbook links that resolve, traces, the broker's
view of lag, and readiness-based health.

docker-compose.yml and the files of deploy/observability are parsed (no Docker here). Alertmanager's template is
rendered by its own entry point (deploy/observability/alertmanager/render.sh, run by sh) and checked by
`amtool check-config` when amtool is installed (Debian: apt-get install prometheus-alertmanager); promtool's checks
of the rules are in tests/ops/test_ops_observability_config.py.
"""

from __future__ import annotations

import asyncio
import http.server
import importlib.util
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from tweetshop_cli import acls
from tweetshop_cli.acls import allowed, derive, principal
from tweetshop_cli.groups import subscriptions
from tweetshop_contracts.system import SYSTEM

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
PROMETHEUS_CONFIG = OBSERVABILITY / "prometheus" / "prometheus.yml"
RULES = OBSERVABILITY / "prometheus" / "rules" / "tweetshop.yml"
ALERTMANAGER_DIR = OBSERVABILITY / "alertmanager"
OTEL_CONFIG = OBSERVABILITY / "otel-collector.yaml"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "tweetshop.json"
RUNBOOK = ROOT / "docs" / "runbook.md"
COMPOSE_FILE = ROOT / "docker-compose.yml"

PROFILE_SERVICES = ("prometheus", "grafana", "alertmanager", "otel-collector", "jaeger", "kafka-exporter", "runbook")
# The five processes of tweetshop itself: the four APIs and the web app.
APPS = tuple(service.name for service in SYSTEM.services)
RUNBOOK_ANCHOR = re.compile(r"^\{\{ \$externalLabels\.runbook_url \}\}#([a-z0-9-]+)$")

Services = dict[str, dict[str, Any]]
ServiceEnvironment = Callable[..., dict[str, str]]


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in _yaml(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def _published(service: Mapping[str, Any]) -> list[str]:
    return [str(entry) for entry in service.get("ports") or []]


def _depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown`` (lower case, punctuation dropped, spaces to dashes),
    headings inside fenced code left out."""
    anchors: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


# The runbook names a panel in italics, as titled, right before "panel"/"panels" ("the *A* and *B* panels").
_PANEL_REFERENCE = re.compile(r"((?:\*[^*\n]+\*(?:,| and| or)\s+)*\*[^*\n]+\*)\s+panels?\b")


def panels_named_in(markdown: str) -> set[str]:
    return {name for group in _PANEL_REFERENCE.findall(markdown) for name in re.findall(r"\*([^*\n]+)\*", group)}


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return panels


# --- the profile ------------------------------------------------------------------------------------------------


def test_the_profile_adds_alertmanager_tracing_the_lag_exporter_and_the_runbook(compose_services: Services) -> None:
    for name in PROFILE_SERVICES:
        service = compose_services[name]
        assert service.get("profiles") == ["observability"], f"{name} must start only with the profile"
        assert service.get("restart") == "unless-stopped", name
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
        image = str(service.get("image", ""))
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image's version ({image})"


def test_observability_ports_are_published_on_this_machine_only(compose_services: Services) -> None:
    expected = {
        "prometheus": ["127.0.0.1:9090:9090"],
        "grafana": ["127.0.0.1:3000:3000"],
        "alertmanager": ["127.0.0.1:9093:9093"],
        "otel-collector": ["127.0.0.1:4317:4317", "127.0.0.1:4318:4318"],
        "jaeger": ["127.0.0.1:16686:16686"],
        "kafka-exporter": [],
        "runbook": ["127.0.0.1:8090:8090"],
    }
    assert {name: _published(compose_services[name]) for name in PROFILE_SERVICES} == expected


def test_no_secret_or_alert_destination_has_a_default() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    defaulted = re.findall(r"\$\{(\w*(?:PASSWORD|SECRET|TOKEN|WEBHOOK|_KEY)\w*):?-", text)
    assert not defaulted, f"these must be required (${{NAME:?...}}), not defaulted: {defaulted}"
    for variable in ("ALERT_WEBHOOK_URL", "MONITOR_KAFKA_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert re.search(rf"\$\{{{variable}:\?[^}}]*see [^}}]+\}}", text), f"{variable}: required, saying where to read"


@pytest.mark.parametrize(
    ("service", "variable"),
    [
        ("alertmanager", "ALERT_WEBHOOK_URL"),
        ("kafka-exporter", "MONITOR_KAFKA_PASSWORD"),
        ("kafka-init", "MONITOR_KAFKA_PASSWORD"),
    ],
)
def test_compose_stops_while_an_observability_variable_is_unset(
    service_environment: ServiceEnvironment, service: str, variable: str
) -> None:
    with pytest.raises(ValueError, match=variable):
        service_environment(service, {variable: ""})


# --- health -----------------------------------------------------------------------------------------------------


def test_the_web_app_waits_for_four_ready_apis_and_the_exporter_for_its_user(compose_services: Services) -> None:
    webapp = _depends_on(compose_services["webapp"])
    assert {name: webapp[name] for name in APPS if name != "webapp"} == dict.fromkeys(
        (name for name in APPS if name != "webapp"), "service_healthy"
    )
    exporter = _depends_on(compose_services["kafka-exporter"])
    assert exporter == {"kafka": "service_healthy", "kafka-init": "service_completed_successfully"}
    assert _depends_on(compose_services["grafana"])["prometheus"] == "service_healthy"


def _load_probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tweetshop_healthcheck", ROOT / "deploy" / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def unready_server() -> Iterator[str]:
    """A local server whose /readyz answers 503 naming its broken dependency, as a service without its database."""
    body = json.dumps({"status": "unready", "checks": {"database": "unavailable: OSError: refused", "broker": "ok"}})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = body.encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_probe_fails_on_an_unready_service_and_says_which_dependency(
    unready_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    probe = _load_probe()
    assert probe.main(["healthcheck.py", f"{unready_server}/readyz"]) == 1
    printed = capsys.readouterr().err
    assert "status 503" in printed and "database" in printed and "unavailable" in printed


# --- alerts reach someone ---------------------------------------------------------------------------------------


def render_alertmanager(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    """Run the container's entry point with `true` in place of Alertmanager: it renders, then exits 0."""
    sh = shutil.which("sh")
    assert sh, "sh runs the entry point"
    true = shutil.which("true")
    assert true
    env = {
        "PATH": "/usr/bin:/bin",
        "ALERT_WEBHOOK_URL": url,
        "ALERTMANAGER_RENDERED": str(tmp_path / "alertmanager.yml"),
        "ALERTMANAGER_BIN": true,
    }
    return subprocess.run(
        [sh, str(ALERTMANAGER_DIR / "render.sh")], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_alertmanager_sends_every_alert_to_the_webhook_it_is_given(tmp_path: Path) -> None:
    url = "https://oncall.example/integrations/alertmanager?token=a1b2&team=shop"
    result = render_alertmanager(tmp_path, url)
    assert result.returncode == 0, result.stderr
    rendered = tmp_path / "alertmanager.yml"
    assert oct(rendered.stat().st_mode & 0o777) == "0o600", "the URL may carry a token"
    config = _yaml(rendered)
    receivers = {r["name"]: r for r in config["receivers"]}
    assert [hook["url"] for hook in receivers["on-call"]["webhook_configs"]] == [url]
    assert receivers["on-call"]["webhook_configs"][0]["send_resolved"] is True

    # Every route ends at a receiver that notifies somebody: none is a black hole.
    def routes(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield route
        for child in route.get("routes") or []:
            yield from routes(child)

    for route in routes(config["route"]):
        receiver = receivers[route.get("receiver", config["route"]["receiver"])]
        assert any(key.endswith("_configs") and receiver[key] for key in receiver), receiver["name"]
    # Inhibitions name alerts that exist.
    names = {alert["alert"] for alert in _alerts()}
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            if matcher.startswith("alertname"):
                pattern = matcher.split("=", 1)[1].lstrip("~").strip('"')
                assert any(re.fullmatch(pattern, name) for name in names), matcher
        assert rule.get("equal"), "an inhibition without `equal` would silence every alert of its kind"


def test_amtool_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (Debian: apt-get install prometheus-alertmanager)")
    result = render_alertmanager(tmp_path, "https://oncall.example/hook")
    assert result.returncode == 0, result.stderr
    checked = subprocess.run(
        [amtool, "check-config", str(tmp_path / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "ALERT_WEBHOOK_URL is required"),
        ("oncall.example/hook", "http:// or https://"),
        ('https://oncall.example/"\n  - url: "https://attacker.example/', "a character a URL cannot"),
        ("https://oncall.example/a b", "a character a URL cannot"),
    ],
)
def test_the_entry_point_refuses_a_missing_or_unsafe_webhook_url(tmp_path: Path, url: str, why: str) -> None:
    result = render_alertmanager(tmp_path, url)
    assert result.returncode != 0
    assert why in result.stderr
    assert not (tmp_path / "alertmanager.yml").exists()


def test_compose_runs_alertmanager_on_the_rendered_file_and_prometheus_sends_it_alerts(
    compose_services: Services, service_environment: ServiceEnvironment
) -> None:
    alertmanager = compose_services["alertmanager"]
    assert alertmanager["entrypoint"] == ["/bin/sh", "/etc/alertmanager/tweetshop/render.sh"]
    assert "./deploy/observability/alertmanager:/etc/alertmanager/tweetshop:ro" in alertmanager["volumes"]
    assert "/run/alertmanager" in alertmanager["tmpfs"], "the rendered file (with the URL) stays in memory"
    mine = "https://oncall.example/mine"
    assert service_environment("alertmanager", {"ALERT_WEBHOOK_URL": mine})["ALERT_WEBHOOK_URL"] == mine
    targets = [
        target
        for manager in _yaml(PROMETHEUS_CONFIG)["alerting"]["alertmanagers"]
        for config in manager["static_configs"]
        for target in config["targets"]
    ]
    assert targets == ["alertmanager:9093"]


# --- runbook links ----------------------------------------------------------------------------------------------


def test_every_runbook_url_is_absolute_and_lands_on_a_heading_of_the_runbook() -> None:
    anchors = github_anchors(RUNBOOK.read_text(encoding="utf-8"))
    for alert in _alerts():
        match = RUNBOOK_ANCHOR.match(alert["annotations"]["runbook_url"])
        assert match, f"{alert['alert']}: runbook_url must be {{{{ $externalLabels.runbook_url }}}}#<anchor>"
        assert match.group(1) == alert["alert"].lower()
        assert match.group(1) in anchors, f"docs/runbook.md has no heading for #{match.group(1)}"


def test_the_runbooks_own_links_land_on_its_headings() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    anchors = github_anchors(text)
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links and not links - anchors, f"broken: {sorted(links - anchors)}"


def test_the_runbook_base_is_one_setting_with_a_default_that_is_served(
    compose_services: Services, service_environment: ServiceEnvironment
) -> None:
    config = _yaml(PROMETHEUS_CONFIG)
    assert config["global"]["external_labels"]["runbook_url"] == "${RUNBOOK_URL}"
    prometheus = compose_services["prometheus"]
    assert "--enable-feature=expand-external-labels" in prometheus["command"], "else ${RUNBOOK_URL} stays literal"
    default = service_environment("prometheus")["RUNBOOK_URL"]
    parts = urlsplit(default)
    assert parts.scheme in ("http", "https") and parts.hostname and not parts.fragment, default
    # The default is the `runbook` container: it publishes that port and serves docs/runbook.md at that path.
    runbook = compose_services["runbook"]
    assert f"127.0.0.1:{parts.port}:{parts.port}" in _published(runbook)
    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in runbook["volumes"]}
    served = mounts["./docs/runbook.md"]
    assert Path(served).name == Path(parts.path).name
    assert f'directory="{Path(served).parent}"' in " ".join(runbook["command"])
    assert f"port={parts.port}" in " ".join(runbook["command"])
    published = "https://git.example/shop/tweetshop/-/blob/main/docs/runbook.md"
    assert service_environment("prometheus", {"RUNBOOK_URL": published})["RUNBOOK_URL"] == published


# --- the dashboard ----------------------------------------------------------------------------------------------


def test_every_panel_the_runbook_names_is_on_the_dashboard() -> None:
    titles = {panel["title"] for panel in dashboard_panels()}
    named = panels_named_in(RUNBOOK.read_text(encoding="utf-8"))
    assert len(named) >= 8, f"the runbook names panels as *Title* panel: found only {sorted(named)}"
    missing = sorted(named - titles)
    assert not missing, f"docs/runbook.md names panels the dashboard does not have: {missing}"


def test_the_dashboard_shows_payments_live_streams_the_web_app_and_the_brokers_lag() -> None:
    exprs = {panel["title"]: " ".join(t["expr"] for t in panel.get("targets", [])) for panel in dashboard_panels()}
    wanted = {
        "Stripe errors per second": "checkout_stripe_errors_total",
        "Stripe call latency p95": "checkout_stripe_call_seconds_bucket",
        "Payments in flight": "checkout_payments_in_flight",
        "Payment mismatches (dashboard time range)": "checkout_payment_mismatches_total",
        "Live streams open": "tweetshop_tracking_sse_watchers",
        "Web app: upstream answers per second": "tweetshop_webapp_upstream_requests_total",
        "Web app: requests per second by status": 'job="webapp"',
        "Consumer lag seen by the broker": "kafka_consumergroup_lag",
    }
    for title, metric in wanted.items():
        assert metric in exprs.get(title, ""), f"panel {title!r} must show {metric}"
    assert "tweetshop_webapp_open_streams" in exprs["Live streams open"]


# --- scraping -----------------------------------------------------------------------------------------------------


def _scrape_targets() -> dict[str, list[str]]:
    return {
        job["job_name"]: [target for config in job["static_configs"] for target in config["targets"]]
        for job in _yaml(PROMETHEUS_CONFIG)["scrape_configs"]
    }


def test_prometheus_scrapes_the_web_app_and_the_lag_exporter(compose_services: Services) -> None:
    targets = _scrape_targets()
    assert targets["webapp"] == [f"webapp:{SYSTEM.service('webapp').port}"]
    assert targets["kafka-exporter"] == ["kafka-exporter:9308"]
    assert targets["alertmanager"] == ["alertmanager:9093"]
    for job_targets in targets.values():
        for target in job_targets:
            host = target.split(":")[0]
            assert host == "localhost" or host in compose_services, f"{target}: no such compose service"


def test_the_web_app_serves_its_metrics() -> None:
    from webapp.config import WebappSettings
    from webapp.main import create_app

    settings = WebappSettings(
        catalog_url="http://catalog.test",
        feed_url="http://feed.test",
        checkout_url="http://checkout.test",
        tracking_url="http://tracking.test",
        log_format="console",
        log_level="WARNING",
    )
    app = create_app(settings, transport=httpx.MockTransport(lambda request: httpx.Response(503)))

    async def scrape() -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://webapp") as client:
                return await client.get("/metrics")

    answer = asyncio.run(scrape())
    assert answer.status_code == 200
    assert "tweetshop_webapp_open_streams" in answer.text
    assert "tweetshop_http_requests_total" in answer.text


# --- traces -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", APPS)
def test_tracing_is_off_unless_asked_and_then_goes_to_the_collector(
    service_environment: ServiceEnvironment, service: str
) -> None:
    env = service_environment(service)
    assert env["TWEETSHOP_TRACING"] == "off"
    assert service_environment(service, {"TWEETSHOP_TRACING": "otlp"})["TWEETSHOP_TRACING"] == "otlp"
    endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    # OTLP over HTTP (telemetry.py's exporter) to the collector's HTTP receiver.
    http_receiver = _yaml(OTEL_CONFIG)["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert (endpoint.scheme, endpoint.hostname) == ("http", "otel-collector")
    assert str(endpoint.port) == http_receiver.rsplit(":", 1)[1]


def test_the_collector_passes_traces_to_jaeger(compose_services: Services) -> None:
    config = _yaml(OTEL_CONFIG)
    pipeline = config["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert pipeline[kind] and set(pipeline[kind]) <= set(config[kind]), kind
    assert pipeline["processors"][0] == "memory_limiter", "the memory limiter goes first"
    (exporter,) = pipeline["exporters"]
    assert config["exporters"][exporter]["endpoint"] == "jaeger:4317"
    collector = compose_services["otel-collector"]
    assert str(collector["image"]).startswith("otel/opentelemetry-collector-contrib:")
    assert "./deploy/observability/otel-collector.yaml:/etc/otelcol-contrib/tweetshop.yaml:ro" in collector["volumes"]
    assert collector["command"] == ["--config=/etc/otelcol-contrib/tweetshop.yaml"]
    jaeger = compose_services["jaeger"]
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    datasources = _yaml(OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "jaeger.yml")["datasources"]
    assert [d["url"] for d in datasources if d["type"] == "jaeger"] == ["http://jaeger:16686"]


# --- the broker's lag exporter ------------------------------------------------------------------------------------


def test_the_monitor_user_describes_topics_groups_and_the_cluster_and_nothing_more() -> None:
    granted = derive()
    monitor = principal(acls.MONITOR)
    mine = [acl for acl in granted if acl.principal == monitor]
    assert {acl.operation for acl in mine} == {"DESCRIBE"}, "no READ, WRITE or CREATE: it reads no message"
    for topic in acls.all_topics():
        assert allowed(granted, monitor, "DESCRIBE", "TOPIC", topic), topic
    for subscription in subscriptions():
        assert allowed(granted, monitor, "DESCRIBE", "GROUP", subscription.group), subscription.group
    assert allowed(granted, monitor, "DESCRIBE", "CLUSTER", acls.CLUSTER)
    assert not allowed(granted, monitor, "READ", "GROUP", "catalog.orders")
    assert acls.MONITOR in acls.users()


def test_kafka_exporter_logs_in_as_monitor_with_the_password_kafka_init_gave_it(
    compose_services: Services, service_environment: ServiceEnvironment, listeners: Any
) -> None:
    exporter = compose_services["kafka-exporter"]
    assert exporter["entrypoint"] == ["/bin/sh", "-c"]
    command = " ".join(exporter["command"])
    kafka = service_environment("kafka")
    client = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])["CLIENT"]
    assert f"--kafka.server={client[0]}:{client[1]}" in command
    assert "--sasl.enabled" in command and f"--sasl.username={acls.MONITOR}" in command
    assert "--sasl.mechanism=scram-sha512" in command and kafka["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    # Read from the container's environment by sh at start ($$ is compose's escape for $): never written here.
    assert '--sasl.password="$$MONITOR_KAFKA_PASSWORD"' in command
    env = service_environment("kafka-exporter")
    assert env["MONITOR_KAFKA_PASSWORD"] == service_environment("kafka-init")["MONITOR_KAFKA_PASSWORD"]
