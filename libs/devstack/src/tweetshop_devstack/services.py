"""The services `make run` and the test fixtures start, and the environment each one gets.

Read from the one declaration of the system (``tweetshop_contracts.system``): name, module, contract port and
what each one needs (database, Kafka, Stripe, public addresses, companions) are written there, not here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

from tweetshop_contracts.system import SYSTEM, Service

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
    # Serves pages that link to its own public address (TWEETSHOP_PUBLIC_URL).
    public_pages: bool = False
    # Services whose public address it puts in its answers (TWEETSHOP_<NAME>_PUBLIC_URL).
    links_to: tuple[str, ...] = ()
    # Calls the other services' APIs (TWEETSHOP_<NAME>_URL, and Stripe's).
    gateway: bool = False
    # Modules `make run` starts beside it: ``python -m <module> --<name>-url <its URL>``.
    dev_companions: tuple[str, ...] = ()

    @classmethod
    def of(cls, service: Service) -> ServiceDef:
        """The definition of a declared service."""
        return cls(
            service.name,
            service.module,
            service.port,
            uses_database=service.database,
            uses_kafka=service.kafka,
            uses_stripe=service.stripe,
            optional=service.optional,
            public_pages=service.public_pages,
            links_to=service.links_to,
            gateway=service.gateway,
            dev_companions=service.dev_companions,
        )

    def is_installed(self) -> bool:
        """True when ``python -m <module>`` can find the module."""
        return importlib.util.find_spec(self.module) is not None


# Every declared service, in declaration order (contract v1 ports: the same in `make run` and docker-compose).
SERVICES: tuple[ServiceDef, ...] = tuple(ServiceDef.of(service) for service in SYSTEM.services)
BY_NAME: dict[str, ServiceDef] = {s.name: s for s in SERVICES}
CATALOG = BY_NAME["catalog"]
FEED = BY_NAME["feed"]
CHECKOUT = BY_NAME["checkout"]
TRACKING = BY_NAME["tracking"]
WEBAPP = BY_NAME["webapp"]


def public_url(name: str, public_urls: Mapping[str, str] | None = None) -> str:
    """The address a browser reaches ``name`` at: from ``public_urls``, else its contract port on localhost."""
    if public_urls and name in public_urls:
        return public_urls[name]
    return f"http://localhost:{BY_NAME[name].port}"


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
    tracking_public_url: str | None = None,
    service_urls: dict[str, str] | None = None,
    public_urls: Mapping[str, str] | None = None,
    topic_namespace: str = "",
    log_format: str = "console",
    high_rate_limits: bool = False,
) -> dict[str, str]:
    """The TWEETSHOP_* variables one service process gets (added to the parent's environment).

    ``public_urls``: where a browser reaches each service (default: its contract port on localhost);
    ``tracking_public_url`` is the same for tracking alone (kept for the callers that pass it).
    ``high_rate_limits``: the per-client limits raised out of reach (tests, benchmarks).
    """
    urls = {**({"tracking": tracking_public_url} if tracking_public_url else {}), **(public_urls or {})}
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
    for other in service.links_to:
        env[f"TWEETSHOP_{other.upper()}_PUBLIC_URL"] = public_url(other, urls)
    if service.public_pages:
        env["TWEETSHOP_PUBLIC_URL"] = public_url(service.name, urls)
    if service.uses_database:  # the four APIs (the web app has no per-client limits of its own)
        env["TWEETSHOP_TRUSTED_PROXIES"] = LOCAL_PROXIES
        if high_rate_limits:
            env.update(HIGH_RATE_LIMITS)
    for name, url in (service_urls or {}).items():
        # For the web app: where the APIs it calls live (TWEETSHOP_CATALOG_URL, ..., TWEETSHOP_STRIPE_URL).
        env[f"TWEETSHOP_{name.upper()}_URL"] = url
    env.update(service.extra_env)
    return env
