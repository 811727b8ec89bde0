"""The services `make run` and the test fixtures start: one table, and the environment each one gets."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

# Every process `make run`, the test fixtures and the benchmarks start runs in development mode: it accepts the
# public development secrets below (and the operator key's default) that a production service refuses to start with.
DEVELOPMENT_ENVIRONMENT = {"TWEETSHOP_ENVIRONMENT": "development"}
# Development-only credentials: localstripe accepts any ``sk_test_`` key, and Postgres runs with trust auth locally.
DEV_STRIPE_API_KEY = "sk_test_tweetshop_dev"
DEV_STRIPE_WEBHOOK_SECRET = "whsec_tweetshop_dev"
# Id of checkout's webhook registration in localstripe (`POST /_config/webhooks/{id}`).
STRIPE_WEBHOOK_ID = "tweetshop"
# The per-client rate limits (tweetshop_platform.ratelimit) raised out of reach: tests and benchmarks send from one
# address what thousands of buyers would. `make run` keeps the real defaults.
HIGH_RATE_LIMITS = {
    "TWEETSHOP_RATE_LIMIT_WRITES": "1000000/second",
    "TWEETSHOP_RATE_LIMIT_SIGNUPS": "1000000/second",
    "TWEETSHOP_RATE_LIMIT_ORDERS": "1000000/second",
    "TWEETSHOP_RATE_LIMIT_COURIER_LOCATIONS": "1000000/second",
    "TWEETSHOP_RATE_LIMIT_CREDENTIAL_FAILURES": "1000000/second",
    # checkout: one test buyer, card and address place many orders left unpaid on purpose (0: no cap).
    "TWEETSHOP_UNPAID_ORDERS_CAP": "0",
}
# The web app runs on the same machine: the services believe the buyer's address it sends (X-Forwarded-For).
LOCAL_PROXIES = "127.0.0.1,::1"


@dataclass(frozen=True)
class ServiceDef:
    """How to start one service: ``python -m <module>`` on ``port`` with the resources it needs."""

    name: str
    module: str
    port: int
    uses_database: bool = True
    uses_kafka: bool = True
    uses_stripe: bool = False
    # Started only when its module is installed (the buyer web app may not exist yet).
    optional: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)

    def is_installed(self) -> bool:
        """True when ``python -m <module>`` can find the module."""
        return importlib.util.find_spec(self.module) is not None


# Contract v1 ports (the same in `make run` and docker-compose).
CATALOG = ServiceDef("catalog", "catalog", 8001)
FEED = ServiceDef("feed", "feed", 8002)
CHECKOUT = ServiceDef("checkout", "checkout", 8003, uses_stripe=True)
TRACKING = ServiceDef("tracking", "tracking", 8004)
WEBAPP = ServiceDef("webapp", "webapp", 8000, uses_database=False, uses_kafka=False, optional=True)

SERVICES: tuple[ServiceDef, ...] = (CATALOG, FEED, CHECKOUT, TRACKING, WEBAPP)
BY_NAME: dict[str, ServiceDef] = {s.name: s for s in SERVICES}


def dev_password(service: str) -> str:
    """The database password of a service's role in `make run` and tests (roles are server-wide, so one per name)."""
    return f"{service}-dev-password"


def service_dsn(admin_dsn: str, service: str, password: str) -> str:
    """The DSN of ``service``'s own role: the admin DSN's host, port and database with the service's credentials."""
    parts = urlsplit(admin_dsn)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(service, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def service_env(
    service: ServiceDef,
    *,
    http_port: int,
    http_host: str = "127.0.0.1",
    database_url: str | None = None,
    kafka_bootstrap: str | None = None,
    kafka_idempotence: bool = False,
    stripe_base_url: str | None = None,
    tracking_public_url: str = "http://localhost:8004",
    service_urls: dict[str, str] | None = None,
    topic_namespace: str = "",
    log_format: str = "console",
    high_rate_limits: bool = False,
) -> dict[str, str]:
    """The TWEETSHOP_* variables one service process gets (added to the parent's environment).

    ``high_rate_limits``: the per-client limits raised out of reach (tests, benchmarks).
    """
    env = {
        **DEVELOPMENT_ENVIRONMENT,
        "TWEETSHOP_SERVICE_NAME": service.name,
        "TWEETSHOP_HTTP_HOST": http_host,
        "TWEETSHOP_HTTP_PORT": str(http_port),
        "TWEETSHOP_LOG_FORMAT": log_format,
        # Logs reach the file at once, not when a buffer fills.
        "PYTHONUNBUFFERED": "1",
    }
    if service.uses_database:
        if database_url is None:
            raise ValueError(f"{service.name} needs a database_url")
        env["TWEETSHOP_DATABASE_URL"] = database_url
    if service.uses_kafka:
        if kafka_bootstrap is None:
            raise ValueError(f"{service.name} needs kafka_bootstrap")
        env["TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
        # Tansu has no InitProducerId: idempotence is on only against Apache Kafka.
        env["TWEETSHOP_KAFKA_ENABLE_IDEMPOTENCE"] = "true" if kafka_idempotence else "false"
        env["TWEETSHOP_TOPIC_NAMESPACE"] = topic_namespace
    if service.uses_stripe:
        if stripe_base_url is None:
            raise ValueError(f"{service.name} needs stripe_base_url")
        env["TWEETSHOP_STRIPE_API_BASE"] = stripe_base_url
        env["TWEETSHOP_STRIPE_API_KEY"] = DEV_STRIPE_API_KEY
        env["TWEETSHOP_STRIPE_WEBHOOK_SECRET"] = DEV_STRIPE_WEBHOOK_SECRET
        env["TWEETSHOP_TRACKING_PUBLIC_URL"] = tracking_public_url
    if service.name == "tracking":
        env["TWEETSHOP_PUBLIC_URL"] = tracking_public_url
    if service.uses_database:  # the four APIs (the web app has no per-client limits of its own)
        env["TWEETSHOP_TRUSTED_PROXIES"] = LOCAL_PROXIES
        if high_rate_limits:
            env.update(HIGH_RATE_LIMITS)
    for name, url in (service_urls or {}).items():
        # For the web app: where the APIs it calls live (TWEETSHOP_CATALOG_URL, ..., TWEETSHOP_STRIPE_URL).
        env[f"TWEETSHOP_{name.upper()}_URL"] = url
    env.update(service.extra_env)
    return env
