"""docker-compose.yml as the containers see it: parsed, anchors merged, variables resolved.

Tests get it through fixtures (test modules here are not importable from each other). The file requires
its secrets (``${NAME:?...}``): ``service_environment`` resolves it as on a host that set each of them
(``HOST_SECRETS``, strong random values), plus what a test adds.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

_REQUIRED = re.compile(r"\$\{(\w+):?\?")


def required_variables() -> set[str]:
    """Every variable the file requires (``${NAME:?...}`` or ``${NAME?...}``): compose stops while one is unset."""
    return set(_REQUIRED.findall(COMPOSE_FILE.read_text(encoding="utf-8")))


def a_strong_value(variable: str) -> str:
    """What a careful operator sets: a random value of the shape the variable needs."""
    if variable == "STRIPE_API_KEY":
        return "sk_test_" + secrets.token_hex(24)
    if variable == "STRIPE_PUBLISHABLE_KEY":
        return "pk_test_" + secrets.token_hex(24)
    if variable == "STRIPE_WEBHOOK_SECRET":
        return "whsec_" + secrets.token_urlsafe(32)
    return secrets.token_urlsafe(48)


HOST_SECRETS: dict[str, str] = {name: a_strong_value(name) for name in sorted(required_variables())}

_VARIABLE = re.compile(r"\$\$|\$\{(?P<braced>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Resolve compose variables as `docker compose` does.

    Handles $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err} and ${VAR?err}.
    """

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = environ.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise ValueError(f"compose would stop: {name} is required ({arg})")
        return current or ""

    return _VARIABLE.sub(substitute, value)


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def raw_environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's environment as written (list or mapping form); None means 'passed through from the host'."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.split("=", 1) for item in env]
        return {pair[0]: (pair[1] if len(pair) == 2 else None) for pair in pairs}
    return {key: (None if value is None else str(value)) for key, value in env.items()}


def resolved_environment(service: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a container gets, with ``environ`` as the host's (default: none, so the file's defaults)."""
    host = environ or {}
    resolved: dict[str, str] = {}
    for key, value in raw_environment(service).items():
        if value is None:
            if key in host:
                resolved[key] = host[key]
        else:
            resolved[key] = interpolate(value, host)
    return resolved


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="session")
def compose_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose.get("services")
    assert isinstance(services, dict), "docker-compose.yml has no services"
    return services


Listeners = Callable[[str], dict[str, tuple[str, int]]]


def parse_listeners(value: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' → {NAME: (host, port)} (an empty host means every interface)."""
    found: dict[str, tuple[str, int]] = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        found[name] = (host, int(port))
    return found


@pytest.fixture(scope="session")
def listeners() -> Listeners:
    """``listeners(value)``: Kafka's 'NAME://host:port,...' (KAFKA_LISTENERS, …) as {NAME: (host, port)}."""
    return parse_listeners


ServiceEnvironment = Callable[..., dict[str, str]]


@pytest.fixture(scope="session")
def service_environment(compose_services: dict[str, dict[str, Any]]) -> ServiceEnvironment:
    """``service_environment(name, host_env=None)``: the resolved environment of one compose service, on a
    host that set every required secret (HOST_SECRETS) and ``host_env``."""

    def environment_of(name: str, host_env: Mapping[str, str] | None = None) -> dict[str, str]:
        assert name in compose_services, f"docker-compose.yml has no service {name!r}"
        return resolved_environment(compose_services[name], {**HOST_SECRETS, **(host_env or {})})

    return environment_of


@pytest.fixture(scope="session")
def host_secrets() -> dict[str, str]:
    """Every variable the file requires, set to a strong value (what ``service_environment`` resolves with)."""
    return dict(HOST_SECRETS)


@pytest.fixture(scope="session")
def environment_on_host(compose_services: dict[str, dict[str, Any]]) -> ServiceEnvironment:
    """``environment_on_host(name, host_env)``: one service's environment on a host with exactly ``host_env``."""

    def environment_of(name: str, host_env: Mapping[str, str]) -> dict[str, str]:
        return resolved_environment(compose_services[name], host_env)

    return environment_of


@pytest.fixture(scope="session")
def written_environment(compose_services: dict[str, dict[str, Any]]) -> Callable[[str], dict[str, str | None]]:
    """``written_environment(name)``: one service's environment before interpolation."""

    def environment_of(name: str) -> dict[str, str | None]:
        return raw_environment(compose_services[name])

    return environment_of
