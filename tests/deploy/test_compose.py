"""docker-compose.yml runs the four services the way their settings and public contract v1 expect.

The file is parsed (no Docker engine needed). The settings classes are imported
live: a setting that is renamed or removed breaks this test instead of being
silently ignored by a container. Which services there are, their ports and
settings classes come from the system's declaration (tweetshop_contracts.system).
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from pydantic_settings import BaseSettings
from tweetshop_contracts.system import SYSTEM
from tweetshop_platform import telemetry
from tweetshop_platform.settings import InsecureSecretsError

ROOT = Path(__file__).resolve().parents[2]
# The APIs: every declared service with its own database and Kafka (the web app has its own tests below).
CONTRACT_PORTS: dict[str, int] = {s.name: s.port for s in SYSTEM.services if s.database and s.kafka}
SERVICES = tuple(CONTRACT_PORTS)
DATABASE_SERVICES = tuple(s.name for s in SYSTEM.with_database())
STRIPE_SERVICES = {s.name for s in SYSTEM.services if s.stripe}
INIT_SCRIPT_DIR = "/docker-entrypoint-initdb.d"

ServiceEnvironment = Callable[..., dict[str, str]]
Services = dict[str, dict[str, Any]]
Listeners = Callable[[str], dict[str, tuple[str, int]]]


def settings_class(service: str) -> type[BaseSettings]:
    """The service's settings class. A package that is not installed fails the test: it must not skip."""
    module_name, _, class_name = SYSTEM.service(service).settings.partition(":")
    try:
        settings: type[BaseSettings] = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        pytest.fail(f"cannot import the settings of {service} ({exc}): install the packages (`make install`)")
    return settings


def env_prefix(cls: type[BaseSettings]) -> str:
    return str(cls.model_config.get("env_prefix", "")).upper()


@contextmanager
def only_these_variables(prefix: str, env: Mapping[str, str]) -> Iterator[None]:
    """The process environment with ``env`` as the only ``prefix*`` variables (what the container has)."""
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.upper().startswith(prefix):
                patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        yield


def settings_in_container(service: str, env: Mapping[str, str]) -> Any:
    """The service's settings as its container builds them from ``env``; a wrong type fails validation here."""
    cls = settings_class(service)
    with only_these_variables(env_prefix(cls), env):
        return cls()


def published_ports(service: Mapping[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs, from the short ("[ip:]host:container[/proto]") or the long syntax."""
    pairs: set[tuple[int, int]] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is not None:
                pairs.add((int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) >= 2 and parts[-2].isdigit() and parts[-1].isdigit():
            pairs.add((int(parts[-2]), int(parts[-1])))
    return pairs


def build_args(build: Mapping[str, Any]) -> dict[str, str]:
    args = build.get("args") or {}
    if isinstance(args, list):
        return dict(item.split("=", 1) for item in args)
    return {key: str(value) for key, value in args.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Dependency → condition (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def healthcheck_command(service: Mapping[str, Any]) -> str:
    check = service.get("healthcheck") or {}
    assert not check.get("disable"), "healthcheck disabled"
    test = check.get("test")
    if isinstance(test, list):
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"healthcheck test must start with CMD or CMD-SHELL: {test}"
        return " ".join(str(part) for part in test[1:])
    assert isinstance(test, str) and test, "no healthcheck test"
    return test


def test_compose_defines_the_four_services_and_their_infrastructure(compose_services: Services) -> None:
    missing = {*SERVICES, "kafka", "postgres", "localstripe", "localstripe-webhook"} - set(compose_services)
    assert not missing, f"docker-compose.yml lacks {sorted(missing)}"


def test_environment_values_are_strings_not_yaml_booleans(compose_services: Services) -> None:
    # Compose refuses `KEY: true` (a YAML boolean) in a mapping: it must be written "true".
    offenders = [
        f"{name}.{key}"
        for name, service in compose_services.items()
        if isinstance(service.get("environment"), dict)
        for key, value in service["environment"].items()
        if isinstance(value, bool)
    ]
    assert not offenders, f"quote these values: {offenders}"


@pytest.mark.parametrize("service", SERVICES)
def test_service_is_built_from_the_shared_dockerfile_for_itself(compose_services: Services, service: str) -> None:
    build = compose_services[service].get("build")
    assert isinstance(build, dict), f"{service}: build must be a mapping with context and args"
    assert str(build.get("context")).rstrip("/") in (".", ""), f"{service}: build context must be the repository root"
    assert build.get("dockerfile") in (None, "Dockerfile", "./Dockerfile"), f"{service}: must use the root Dockerfile"
    assert build_args(build).get("SERVICE") == service


@pytest.mark.parametrize("service", SERVICES)
def test_service_publishes_its_contract_port_and_listens_on_it(
    compose_services: Services, service_environment: ServiceEnvironment, service: str
) -> None:
    port = CONTRACT_PORTS[service]
    assert (port, port) in published_ports(compose_services[service]), f"{service} must publish {port}:{port}"
    env = service_environment(service)
    assert env.get("TWEETSHOP_HTTP_PORT") == str(port)
    assert settings_in_container(service, env).http_port == port


@pytest.mark.parametrize("service", SERVICES)
def test_every_tweetshop_variable_names_a_setting_of_the_service(
    service_environment: ServiceEnvironment, service: str
) -> None:
    cls = settings_class(service)
    prefix = env_prefix(cls)
    assert prefix == "TWEETSHOP_", f"{cls.__name__} reads {prefix}*: rename the variables in docker-compose.yml"
    env = service_environment(service)
    unknown = sorted(
        key for key in env if key.upper().startswith(prefix) and key[len(prefix) :].lower() not in cls.model_fields
    )
    assert not unknown, f"{service}: {unknown} are not fields of {cls.__name__}, so the service would ignore them"
    settings_in_container(service, env)  # every value has the field's type


@pytest.mark.parametrize("service", SERVICES)
def test_service_reaches_kafka_inside_the_compose_network_with_idempotence(
    service_environment: ServiceEnvironment, service: str, listeners: Listeners
) -> None:
    env = service_environment(service)
    assert "TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS" in env, f"{service} would look for Kafka at its localhost default"
    advertised = listeners(service_environment("kafka")["KAFKA_ADVERTISED_LISTENERS"]).values()
    internal = {f"{host}:{port}" for host, port in advertised if host not in ("localhost", "127.0.0.1")}
    for server in env["TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS"].split(","):
        assert server.strip() in internal, f"{service}: {server} is not a listener Kafka advertises to containers"
    settings = settings_in_container(service, env)
    assert settings.kafka_enable_idempotence is True, "Apache Kafka supports the idempotent producer: turn it on"


@pytest.mark.parametrize("service", SERVICES)
def test_service_logs_in_to_postgres_as_its_own_role_with_the_password_init_creates(
    compose_services: Services, service_environment: ServiceEnvironment, service: str
) -> None:
    env = service_environment(service)
    assert "TWEETSHOP_DATABASE_URL" in env, f"{service} would use its localhost database default"
    dsn = urlsplit(env["TWEETSHOP_DATABASE_URL"])
    postgres = service_environment("postgres")
    assert dsn.scheme in ("postgresql", "postgres")
    assert dsn.hostname == "postgres" and "postgres" in compose_services
    assert dsn.port in (None, 5432)
    assert dsn.path == f"/{postgres['POSTGRES_DB']}"
    assert dsn.username == service, "one role per service, named after it"
    password_variable = f"{service.upper()}_DB_PASSWORD"
    assert postgres.get(password_variable), f"postgres must pass {password_variable} to its init script"
    assert unquote(dsn.password or "") == postgres[password_variable]
    # Overriding the password on the host changes both sides together.
    override = {password_variable: "not-the-dev-default"}
    overridden = urlsplit(service_environment(service, override)["TWEETSHOP_DATABASE_URL"])
    assert overridden.password == service_environment("postgres", override)[password_variable] == "not-the-dev-default"
    settings = settings_in_container(service, env)
    assert settings.database_url.get_secret_value() == env["TWEETSHOP_DATABASE_URL"]
    assert settings.service_name == service


@pytest.mark.parametrize("service", [*SERVICES, "webapp"])
def test_service_healthcheck_probes_readyz_on_its_port_with_the_image_probe(
    compose_services: Services, service: str
) -> None:
    """Healthy means ready (the database and the broker answer; for the web app, the four APIs), so that
    `condition: service_healthy` waits for a service that can work; liveness alone (/healthz) said nothing of that."""
    check = compose_services[service]["healthcheck"]
    command = healthcheck_command(compose_services[service])
    port = SYSTEM.service(service).port
    assert re.fullmatch(rf"python /opt/tweetshop/healthcheck\.py http://127\.0\.0\.1:{port}/readyz", command), command
    assert (ROOT / "deploy" / "healthcheck.py").is_file()
    # Long enough for the migrations and the 60 s a service waits for Postgres and Kafka at start-up.
    start_period = str(check["start_period"])
    assert start_period.endswith("s") and int(start_period[:-1]) >= 90, start_period


@pytest.mark.parametrize("service", SERVICES)
def test_service_waits_for_healthy_kafka_and_postgres_and_restarts(compose_services: Services, service: str) -> None:
    conditions = depends_on(compose_services[service])
    for dependency in ("kafka", "postgres"):
        assert conditions.get(dependency) == "service_healthy", f"{service} must wait for a healthy {dependency}"
        healthcheck_command(compose_services[dependency])  # a dependency without a healthcheck never turns healthy
    assert compose_services[service].get("restart") == "unless-stopped"


def test_checkout_talks_to_stripe_with_the_key_and_webhook_secret_the_host_sets(
    compose_services: Services, service_environment: ServiceEnvironment, host_secrets: dict[str, str]
) -> None:
    env = service_environment("checkout")
    assert env["TWEETSHOP_STRIPE_API_KEY"] == host_secrets["STRIPE_API_KEY"]
    assert env["TWEETSHOP_STRIPE_WEBHOOK_SECRET"] == host_secrets["STRIPE_WEBHOOK_SECRET"]
    settings = settings_in_container("checkout", env)
    assert settings.stripe_base_url is None, "by default checkout talks to api.stripe.com, not localstripe"
    settings.check_secrets()

    # Development without a Stripe account: the `localstripe` profile and its base URL (deploy/README.md).
    local = service_environment("checkout", {"TWEETSHOP_STRIPE_API_BASE": "http://localstripe:8420"})
    base = urlsplit(settings_in_container("checkout", local).stripe_base_url)
    assert (base.hostname, base.port) == ("localstripe", 8420)
    assert (8420, 8420) in published_ports(compose_services["localstripe"])
    hook = (compose_services["checkout"].get("depends_on") or {}).get("localstripe-webhook")
    assert hook == {"condition": "service_completed_successfully", "required": False}, (
        "checkout waits for the webhook registration only when the localstripe profile runs it"
    )


def test_localstripe_runs_only_when_its_development_profile_is_asked_for(compose_services: Services) -> None:
    for name in ("localstripe", "localstripe-webhook"):
        assert compose_services[name].get("profiles") == ["localstripe"], f"{name} must be off unless asked for"
    profiled = {name for name, service in compose_services.items() if service.get("profiles")}
    for name, service in compose_services.items():
        if name in profiled:
            continue
        needed = {dep for dep, spec in (service.get("depends_on") or {}).items() if (spec or {}).get("required", True)}
        assert not needed & profiled, f"{name} always runs: it cannot require {sorted(needed & profiled)}"


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY\b|_KEY_|^KEY", re.IGNORECASE)
NOT_SECRET = re.compile(r"PUBLISHABLE", re.IGNORECASE)
DEFAULTED = re.compile(r"\$\{(\w+)(:?-)([^}]*)\}")


def test_no_secret_has_a_default_or_a_value_in_the_file(written_environment: Any, compose_services: Services) -> None:
    offenders: list[str] = []
    for name in compose_services:
        for key, value in written_environment(name).items():
            if value is None:
                continue
            for variable, _, default in DEFAULTED.findall(value):
                if (SECRET_NAME.search(variable) or SECRET_NAME.search(key)) and not NOT_SECRET.search(variable):
                    offenders.append(f"{name}.{key}: ${{{variable}}} defaults to {default!r}")
            if SECRET_NAME.search(key) and not NOT_SECRET.search(key) and "${" not in value:
                offenders.append(f"{name}.{key} is written in the file")
            dsn = urlsplit(value) if "://" in value else None
            if dsn is not None and dsn.password is not None and not re.fullmatch(r"\$\{\w+:\?[^}]*\}", dsn.password):
                offenders.append(f"{name}.{key}: the password in {value} is not a required variable")
    assert not offenders, "secrets must be required (${NAME:?...}), never defaulted:\n" + "\n".join(offenders)


REQUIRED_SECRETS = {
    "TWEETSHOP_OPERATOR_KEY": set(SERVICES),
    "STRIPE_API_KEY": STRIPE_SERVICES,
    "STRIPE_WEBHOOK_SECRET": {*STRIPE_SERVICES, "localstripe-webhook"},
    "POSTGRES_PASSWORD": {"postgres"},
    **{f"{name.upper()}_DB_PASSWORD": {"postgres", name} for name in DATABASE_SERVICES},
    "GRAFANA_ADMIN_PASSWORD": {"grafana"},
}


@pytest.mark.parametrize("variable", sorted(REQUIRED_SECRETS))
def test_compose_stops_and_names_a_secret_the_host_did_not_set(
    environment_on_host: ServiceEnvironment, host_secrets: dict[str, str], variable: str
) -> None:
    assert variable in host_secrets, f"docker-compose.yml must require {variable} with ${{{variable}:?...}}"
    for host in ({k: v for k, v in host_secrets.items() if k != variable}, {**host_secrets, variable: ""}):
        for name in REQUIRED_SECRETS[variable]:
            with pytest.raises(ValueError, match=rf"{variable} is required \(.*deploy/README.md, Secrets\)"):
                environment_on_host(name, host)


@pytest.mark.parametrize("service", SERVICES)
def test_services_run_in_production_where_public_secrets_stop_them(
    service_environment: ServiceEnvironment, host_secrets: dict[str, str], service: str
) -> None:
    settings = settings_in_container(service, service_environment(service))
    assert settings.environment == "production"
    assert settings.operator_key.get_secret_value() == host_secrets["TWEETSHOP_OPERATOR_KEY"]
    settings.check_secrets()
    weak = settings_in_container(service, service_environment(service, {"TWEETSHOP_OPERATOR_KEY": "dev-operator-key"}))
    with pytest.raises(InsecureSecretsError, match="TWEETSHOP_OPERATOR_KEY is a public default"):
        weak.check_secrets()


# The public contract v1 ports (the four APIs, the web app) and Kafka for other teams' consumers; anything else
# published (Postgres, localstripe, Prometheus, Grafana) is for this machine only.
PUBLIC_PORTS = {*SYSTEM.names, "kafka"}


def test_ports_other_than_the_public_apis_are_published_on_127_0_0_1_only(compose_services: Services) -> None:
    offenders = []
    for name, service in compose_services.items():
        if name in PUBLIC_PORTS:
            continue
        for entry in service.get("ports") or []:
            host_ip = entry.get("host_ip") if isinstance(entry, dict) else str(entry).rsplit(":", 2)[0]
            if host_ip != "127.0.0.1" or (isinstance(entry, str) and str(entry).count(":") != 2):
                offenders.append(f"{name}: {entry}")
    assert not offenders, f'publish these on 127.0.0.1 only ("127.0.0.1:HOST:CONTAINER"): {offenders}'


def test_localstripe_webhook_registers_checkouts_endpoint_with_checkouts_secret(
    compose_services: Services, service_environment: ServiceEnvironment
) -> None:
    hook = compose_services["localstripe-webhook"]
    assert depends_on(hook).get("localstripe") == "service_healthy"
    assert hook.get("restart") in ("no", None), "a one-shot container must not restart"
    for host_env in ({}, {"STRIPE_WEBHOOK_SECRET": "whsec_from_host"}):
        hook_env = service_environment("localstripe-webhook", host_env)
        checkout_env = service_environment("checkout", host_env)
        assert hook_env["WEBHOOK_SECRET"] == checkout_env["TWEETSHOP_STRIPE_WEBHOOK_SECRET"]
        assert hook_env["WEBHOOK_URL"] == f"http://checkout:{CONTRACT_PORTS['checkout']}/webhooks/stripe"
    assert urlsplit(service_environment("localstripe-webhook")["LOCALSTRIPE_URL"]).hostname == "localstripe"


def test_tracking_links_point_at_the_published_tracking_port(service_environment: ServiceEnvironment) -> None:
    checkout_link = service_environment("checkout")["TWEETSHOP_TRACKING_PUBLIC_URL"]
    assert checkout_link == service_environment("tracking")["TWEETSHOP_PUBLIC_URL"]
    assert urlsplit(checkout_link).port == CONTRACT_PORTS["tracking"]


def test_kafka_is_a_single_kraft_node(
    compose_services: Services, service_environment: ServiceEnvironment, listeners: Listeners
) -> None:
    assert str(compose_services["kafka"].get("image", "")).startswith("apache/kafka:3.9.")
    env = service_environment("kafka")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env.get("CLUSTER_ID"), "KRaft formats its storage with CLUSTER_ID"
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners(env["KAFKA_LISTENERS"])
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1", "one broker: replication factor 1"


def test_kafka_advertises_localhost_9092_to_the_host(
    compose_services: Services, service_environment: ServiceEnvironment, listeners: Listeners
) -> None:
    env = service_environment("kafka")
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    host_listeners = [name for name, address in advertised.items() if address == ("localhost", 9092)]
    assert host_listeners, "other teams connect to localhost:9092: some listener must advertise it"
    name = host_listeners[0]
    assert bound[name][1] == 9092, "the listener advertised as localhost:9092 must listen on 9092 in the container"
    # Authenticated, and published on 127.0.0.1 only by the kafka-host profile (tests/deploy/test_broker_security.py).
    assert protocols.get(name) == "SASL_PLAINTEXT"
    assert not published_ports(compose_services["kafka"]), "Kafka itself is not published on the host"
    assert (9092, 9092) in published_ports(compose_services["kafka-host"])
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert all(listener in protocols for listener in bound)


def test_postgres_17_creates_a_role_and_schema_for_every_service_at_init(
    compose_services: Services, service_environment: ServiceEnvironment
) -> None:
    postgres = compose_services["postgres"]
    assert str(postgres.get("image", "")).startswith("postgres:17")
    assert "pg_isready" in healthcheck_command(postgres)
    sources = [
        str(volume).split(":")[0] for volume in postgres.get("volumes", []) if f":{INIT_SCRIPT_DIR}" in str(volume)
    ]
    assert sources, f"mount deploy/postgres into {INIT_SCRIPT_DIR}"
    init_dir = ROOT / sources[0]
    assert init_dir.resolve().is_relative_to(ROOT / "deploy" / "postgres")
    scripts = sorted(init_dir.glob("*.sh")) if init_dir.is_dir() else [init_dir]
    assert scripts and all(script.is_file() for script in scripts)
    text = "\n".join(script.read_text(encoding="utf-8") for script in scripts)
    declared = re.search(r"^services=\(([^)]*)\)", text, re.MULTILINE)
    assert declared, "the init script lists the services it provisions in services=(...)"
    assert declared.group(1).split() == list(DATABASE_SERVICES), "services=(...) lists every service with a database"
    assert "_DB_PASSWORD" in text
    env = service_environment("postgres")
    assert env["POSTGRES_DB"] == "tweetshop"
    for service in DATABASE_SERVICES:
        assert env.get(f"{service.upper()}_DB_PASSWORD"), f"no password for role {service}"


def compose_command() -> list[str] | None:
    """Compose v2: the docker CLI with its compose plugin, or a v2 ``docker-compose`` binary, if installed.

    The file uses Compose-specification features v1 (Debian's docker-compose 1.29, the only one the package
    registries have) cannot read: ``depends_on`` with ``required: false`` (Compose 2.20+) for the optional
    localstripe profile. v1 is end-of-life since 2023."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    if standalone := shutil.which("docker-compose"):
        probe = subprocess.run([standalone, "version"], capture_output=True, text=True, timeout=30, check=False)
        if re.search(r"v?2\.\d+", probe.stdout):
            return [standalone]
    return None


def test_docker_compose_validates_the_file_offline() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("Compose v2 is not installed (`docker compose` or a v2 docker-compose; v1 cannot read this file)")
    # Every secret is required (`${NAME:?...}`): give each a stand-in, as a deployment's .env would.
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    required = sorted(set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", text)))
    assert required, "the file requires its secrets with ${NAME:?...}"
    stand_ins = {name: f"stand-in-{name.lower()}-0123456789abcdef0123456789" for name in required}
    stand_ins["ALERT_WEBHOOK_URL"] = "https://alerts.example.invalid/hook"
    result = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("TWEETSHOP_")}, **stand_ins},
    )
    assert result.returncode == 0, result.stderr
    # Without them, compose refuses the file and names what is missing: no secret has a usable default.
    bare = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k not in stand_ins},
    )
    assert bare.returncode != 0 and "required" in bare.stderr, bare.stderr


def test_the_web_app_is_deployed_on_its_contract_port_behind_the_four_apis(compose: dict[str, Any]) -> None:
    from webapp.config import WebappSettings

    webapp = compose["services"]["webapp"]
    assert webapp["build"]["args"]["SERVICE"] == "webapp"
    assert "8000:8000" in webapp["ports"]
    environment = webapp["environment"]
    fields = {name.upper() for name in WebappSettings.model_fields}
    for variable in environment:
        if variable.startswith("OTEL_") or variable == telemetry.TRACING_VARIABLE:
            continue  # OpenTelemetry's own variables, and the switch telemetry.tracer reads itself
        assert variable.startswith("TWEETSHOP_") and variable.removeprefix("TWEETSHOP_") in fields, variable
    assert environment["TWEETSHOP_HTTP_PORT"] == "8000"
    for service, port in CONTRACT_PORTS.items():
        assert environment[f"TWEETSHOP_{service.upper()}_URL"] == f"http://{service}:{port}"
        assert webapp["depends_on"][service] == {"condition": "service_healthy"}
    assert "http://127.0.0.1:8000/readyz" in webapp["healthcheck"]["test"]


def test_the_apis_believe_x_forwarded_for_only_from_the_web_apps_fixed_address(compose: dict[str, Any]) -> None:
    """Rate limits count buyers, not the web app: the APIs trust its X-Forwarded-For, and nobody else's."""
    services = compose["services"]
    webapp_address = services["webapp"]["networks"]["default"]["ipv4_address"]
    subnets = [c["subnet"] for c in compose["networks"]["default"]["ipam"]["config"]]
    assert any(ipaddress.ip_address(webapp_address) in ipaddress.ip_network(net) for net in subnets)
    for name in SERVICES:
        assert services[name]["environment"]["TWEETSHOP_TRUSTED_PROXIES"] == webapp_address, name
