"""One settings base for every service; nothing else reads os.environ.

Every field is read from an environment variable named ``TWEETSHOP_<FIELD>``
(for example ``TWEETSHOP_DATABASE_URL``). Each process gets its own
environment, so the same names serve all four services. A secret can come from
a file instead: ``TWEETSHOP_<FIELD>_FILE`` names it, or ``TWEETSHOP_SECRETS_DIR``
holds one file per variable (Docker and Kubernetes secrets).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, PositiveInt, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

DEV_OPERATOR_KEY = "dev-operator-key"

# --- secrets: fail closed outside development ------------------------------------------------------------------
#
# TWEETSHOP_ENVIRONMENT=development (`make run`, the test fixtures) lets a service start with the public
# development secrets; anything else is production, where a service refuses to start while a secret is missing,
# one of the values written in this public repository, or shorter than MIN_SECRET_BYTES.

ENVIRONMENT_VARIABLE = "TWEETSHOP_ENVIRONMENT"
SECRETS_DIR_VARIABLE = "TWEETSHOP_SECRETS_DIR"
FILE_SUFFIX = "_FILE"
MIN_SECRET_BYTES = 32
MAKE_A_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'
SECRETS_DOCS = 'deploy/README.md, "Secrets"'
# Every secret value this repository's code, compose file, docs or tests has ever defaulted to: public knowledge.
PUBLIC_DEFAULT_SECRETS = frozenset(
    {
        DEV_OPERATOR_KEY,
        "whsec_localstripe",
        "whsec_tweetshop_dev",
        "sk_test_localstripe",
        "sk_test_tweetshop_dev",
        "sk_test_local",
    }
)
STRIPE_SECRET_KEY_PREFIXES = ("sk_live_", "sk_test_", "rk_live_", "rk_test_")


class InsecureSecretsError(RuntimeError):
    """Outside development, a secret is missing, a public default or too short: the service must not start."""


def secret_problem(variable: str, value: str | None, *, how: str = f"make one with {MAKE_A_SECRET}") -> str | None:
    """Why ``value`` cannot be the secret ``variable`` outside development (with how to fix it), or None."""
    if not value:
        return f"{variable} is not set: {how}"
    if value in PUBLIC_DEFAULT_SECRETS:
        return f"{variable} is a public default written in this repository, so anyone knows it: {how}"
    size = len(value.encode())
    if size < MIN_SECRET_BYTES:
        return f"{variable} is {size} bytes, shorter than {MIN_SECRET_BYTES}: {how}"
    return None


def stripe_secret_key_problem(variable: str, value: str | None) -> str | None:
    """Like ``secret_problem`` for a Stripe secret or restricted key (sk_live_…, sk_test_…, rk_live_…, rk_test_…)."""
    how = (
        "copy a secret key (sk_live_…/sk_test_…) or a restricted key (rk_…) from the Stripe dashboard, Developers → "
        "API keys; for localstripe any sk_test_ key of 32 bytes or more works, e.g. "
        """sk_test_$(python -c "import secrets; print(secrets.token_hex(24))")"""
    )
    problem = secret_problem(variable, value, how=how)
    if problem is None and value is not None and not value.startswith(STRIPE_SECRET_KEY_PREFIXES):
        return f"{variable} is not a Stripe secret or restricted key (sk_…, rk_…): {how}"
    return problem


def refuse_insecure_secrets(service: str, problems: list[str]) -> None:
    """Raise InsecureSecretsError listing ``problems``, if there are any."""
    if problems:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise InsecureSecretsError(
            f"{service} refuses to start with unsafe secrets ({ENVIRONMENT_VARIABLE} is not 'development'):\n"
            f"{lines}\n"
            f"Set each as an environment variable or put it in a file named by <VARIABLE>{FILE_SUFFIX} "
            f"(see {SECRETS_DOCS}). Only on a laptop or in tests: {ENVIRONMENT_VARIABLE}=development."
        )


def _holds_secret(field: FieldInfo) -> bool:
    annotation = field.annotation
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


class SecretFileSettingsSource(PydanticBaseSettingsSource):
    """``TWEETSHOP_<FIELD>_FILE=/run/secrets/…``: a secret field read from that file (Docker or Kubernetes secrets).

    Only ``SecretStr`` fields; one trailing newline is dropped. Setting both ``TWEETSHOP_<FIELD>`` and
    ``TWEETSHOP_<FIELD>_FILE`` is an error (which one would be meant?).
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        prefix = str(self.config.get("env_prefix", "")).upper()
        environ = {key.upper(): value for key, value in os.environ.items()}
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            variable = f"{prefix}{name.upper()}"
            path = environ.get(variable + FILE_SUFFIX, "").strip()
            if not _holds_secret(field) or not path:
                continue
            if environ.get(variable):
                raise SettingsError(f"both {variable} and {variable}{FILE_SUFFIX} are set: keep one")
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise SettingsError(f"{variable}{FILE_SUFFIX}={path}: cannot read it ({exc.strerror})") from None
            values[name] = text.removesuffix("\n").removesuffix("\r")
        return values


class SecretFileSettings(BaseSettings):
    """Settings read from the arguments, then ``TWEETSHOP_<FIELD>_FILE`` (secrets), then ``TWEETSHOP_<FIELD>``;
    with ``reads_secrets_dir``, then the files in ``TWEETSHOP_SECRETS_DIR``."""

    reads_secrets_dir: ClassVar[bool] = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then TWEETSHOP_<FIELD>_FILE (secrets), TWEETSHOP_<FIELD>, then files in TWEETSHOP_SECRETS_DIR
        (where ``reads_secrets_dir``)."""
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            SecretFileSettingsSource(settings_cls),
            env_settings,
            dotenv_settings,
        ]
        secrets_dir = os.environ.get(SECRETS_DIR_VARIABLE, "").strip() if cls.reads_secrets_dir else ""
        if secrets_dir:
            # pydantic-settings' own: one file per variable, named like it (tweetshop_operator_key, any case).
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir))
        return tuple(sources)


class KafkaClientSecurity(BaseModel):
    """TLS and SASL of the Kafka clients, as any Kafka client takes them (the services' and the CLI's settings).

    Applied to every client the service builds (FastStream broker, outbox relay, topic admin, lag reader, live
    feed) by tweetshop_platform.kafka_security; the `tweetshop` command reads the same variables. PLAINTEXT (the
    default) is for `make run` and tests only: docker-compose.yml runs SASL_PLAINTEXT with one SCRAM user per
    service, and ACLs derived from the topology (deploy/kafka/README.md).
    """

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How clients reach the broker: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS)",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = Field(
        default="SCRAM-SHA-512",
        description="SASL mechanism (SASL_* protocols only); PLAIN sends the password itself: only over SASL_SSL",
    )
    kafka_sasl_username: str = Field(default="", description="SASL user: the service's own principal, User:<name>")
    kafka_sasl_password: SecretStr | None = Field(
        default=None,
        description="SASL password; or TWEETSHOP_KAFKA_SASL_PASSWORD_FILE naming a file that holds it",
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM file of the CA that signed the broker's certificate (default: the system's CAs)"
    )
    kafka_ssl_certfile: Path | None = Field(default=None, description="PEM client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="PEM private key of the client certificate")
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="Password of that key, if encrypted")
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that the broker's certificate names the host connected to"
    )


class ServiceSettings(SecretFileSettings, KafkaClientSecurity):
    """Settings every service shares: broker, database, HTTP, consumers, logging."""

    model_config = SettingsConfigDict(env_prefix="TWEETSHOP_", extra="ignore")
    reads_secrets_dir: ClassVar[bool] = True

    service_name: str = Field(description="Service name: also its Postgres schema and role")
    environment: Literal["development", "production"] = Field(
        default="production",
        description=(
            "development: `make run` and tests, the public development secrets are accepted. Anything else is "
            "production: the service refuses to start while a secret is missing, public or short (check_secrets)"
        ),
    )
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8000, ge=1, le=65535)

    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_enable_idempotence: bool = Field(
        default=False,
        description="Idempotent producer: on against Apache Kafka, off against Tansu (no InitProducerId)",
    )
    kafka_acks: Literal["all", "1", "0"] = "all"
    kafka_topic_partitions: int = Field(default=6, ge=1, description="Partitions for topics this service creates")
    kafka_topic_replication_factor: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Replicas of each topic this service creates (default: each topic's declared factor, "
            "tweetshop_contracts.system); never more than the brokers in the cluster"
        ),
    )
    kafka_create_topics: bool = True
    kafka_linger_ms: int = Field(
        default=10,
        ge=0,
        le=1000,
        description=(
            "How long the outbox relay's producer waits to fill a batch before it sends it: each event reaches the "
            "broker up to this much later, and the broker stores and lists fewer, larger batches"
        ),
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=5000,
        description="Longest a consumer's fetch waits for data; Tansu answers a waiting fetch only when it ends",
    )
    kafka_fetch_min_bytes: int = Field(
        default=65536,
        ge=1,
        le=50 * 1024 * 1024,
        description=(
            "Bytes of new records a reliable consumer's fetch waits for before the broker answers it ahead of "
            "its max wait (read models always use 1: runtime.fetch_of). Under load a group then handles one batch "
            "per wait (one inbox statement, commit and offset commit) instead of a few records per fetch, and an "
            "event reaches it up to its max wait later. 1: answered as soon as any record is there"
        ),
    )
    kafka_read_model_fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        le=5000,
        description=(
            "The same for consumers that only keep read models, and for patient groups no buyer waits on within a "
            "purchase (tracking's orders): on Tansu every fetch costs the broker CPU whether data came or not, so "
            "these ask less often"
        ),
    )
    kafka_quiet_fetch_max_wait_ms: int = Field(
        default=1000,
        ge=1,
        le=5000,
        description=(
            "The fetch wait of a consumer off the purchase's path (read models, shipments, the live map) once it "
            "found nothing for kafka_quiet_after_s: what a stack at rest polls the broker with; the first event "
            "after a quiet spell arrives up to this late (consumer.FetchPacer)"
        ),
    )
    kafka_quiet_after_s: float = Field(
        default=5.0,
        ge=0.0,
        le=3600.0,
        description="Seconds without a record after which a consumer off the purchase's path fetches less often",
    )

    @property
    def quiet_fetch(self) -> tuple[int, float]:
        """(kafka_quiet_fetch_max_wait_ms, kafka_quiet_after_s): how a consumer off the purchase's path is paced
        (``consumer.FetchPacer.of``)."""
        return self.kafka_quiet_fetch_max_wait_ms, self.kafka_quiet_after_s

    topic_namespace: str = Field(
        default="",
        pattern=r"^[a-z0-9_.-]*$",
        description="Prefix for every topic name; empty in production (tests use it to isolate runs)",
    )

    database_url: SecretStr = SecretStr("postgresql://postgres@localhost:5432/tweetshop")
    database_pool_min: int = 2
    database_pool_max: int = Field(default=10, ge=1, description="Most Postgres connections the HTTP API opens")
    database_background_pool_max: int = Field(
        default=6,
        ge=2,
        description=(
            "Most Postgres connections of the work behind the API (consumers, the outbox relay, which holds one, "
            "and the background workers), a pool of its own: a flood of requests (a drop's thousands of buyers) "
            "cannot make a payment, a consumer or the relay queue for a connection behind it"
        ),
    )

    consumer_max_retries: int = Field(
        default=5, ge=0, description="Retries of one message before it is parked on <topic>.dlq"
    )
    consumer_retry_backoff_s: float = Field(default=0.2, ge=0)
    consumer_batch_max_records: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Most messages a consumer applies in one transaction (1: a transaction and an offset commit each)",
    )
    consumer_batch_timeout_ms: int = Field(
        default=1000,
        ge=1,
        le=5000,
        description=(
            "Longest a consumer waits for its fetcher's records before it looks again; it wakes as soon as records "
            "arrive, so this only sets how often an idle consumer wakes"
        ),
    )
    outbox_batch_size: int = Field(
        default=2000,
        ge=1,
        le=50_000,
        description=(
            "Most outbox rows the relay publishes per round; large, because when the service is busy the relay gets "
            "a turn of the event loop only now and then, and each turn should move as much as it can"
        ),
    )
    outbox_poll_interval_s: float = 0.5
    outbox_round_interval_ms: int = Field(
        default=30,
        ge=0,
        le=1000,
        description=(
            "Under load, the least time between the starts of two outbox relay rounds: a round's events go to the "
            "broker as one produce request with one batch per partition, so the broker stores and lists fewer, "
            "larger batches (Tansu lists every batch a partition ever stored on each fetch). An event waits up to "
            "this long for its round while events keep coming; the first after a quiet spell goes at once. 0: a "
            "round as soon as the last one ends"
        ),
    )
    gc_thresholds: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(
        default=(50_000, 20, 10),
        description=(
            "Python's cyclic garbage collector thresholds (gen0 allocations, gen1, gen2), as JSON: [50000, 20, 10]. "
            "CPython's default [700, 10, 10] cost tracking a fifth of its CPU with 1,000 live streams open; "
            "refcounting frees almost everything here, the collector only finds cycles"
        ),
    )
    gc_freeze_after_start: bool = Field(
        default=True,
        description="Move what exists once the service started (modules, app, clients) out of the collector's sight",
    )
    outbox_retention_s: float = Field(
        default=86_400,
        ge=0,
        description=(
            "Published outbox rows older than this are deleted by the relay (0: kept forever); the topics, not "
            "the outbox, are the record of what was published"
        ),
    )

    operator_key: SecretStr = Field(
        default=SecretStr(DEV_OPERATOR_KEY),
        description=(
            "Bearer key of operators, for what acts across merchants and buyers (courier tokens, reconciler runs, "
            "any shipment or refund); outside development, required: 32 bytes or more, not a public default"
        ),
    )

    def variable(self, field: str) -> str:
        """The environment variable of ``field`` (TWEETSHOP_OPERATOR_KEY for operator_key)."""
        return f"{self.model_config.get('env_prefix', '')}{field}".upper()

    def secret_problems(self) -> list[str]:
        """What would make this service's secrets unsafe outside development (empty: none). A service with more
        secrets extends it (checkout: its Stripe key and webhook secrets)."""
        problems = [secret_problem(self.variable("operator_key"), self.operator_key.get_secret_value())]
        if self.kafka_security_protocol.startswith("SASL_"):
            password = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            problems.append(secret_problem(self.variable("kafka_sasl_password"), password))
        return [problem for problem in problems if problem]

    def check_secrets(self) -> None:
        """Outside development, InsecureSecretsError when a secret is missing, a public default or short.

        Called by the shared runtime before it connects to anything (``serve`` and ``ServiceRuntime.start``).
        """
        if self.environment != "development":
            refuse_insecure_secrets(self.service_name, self.secret_problems())

    max_request_body_bytes: int = 1_000_000
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    # Distributed tracing (telemetry.py): "otlp" exports spans over OTLP/HTTP, where the standard OTEL_EXPORTER_OTLP_*
    # variables say (OTEL_EXPORTER_OTLP_ENDPOINT, default http://localhost:4318); "off" (the default) makes no
    # tracer, exporter or processor at all.
    tracing: Literal["off", "otlp"] = "off"

    # --- rate limits (tweetshop_platform.ratelimit): per client, over the limit → 429 with Retry-After ----------
    # A limit is "<count>/<period>", several joined by ";" ("60/minute;1000/day"); periods: second, minute, hour,
    # day ("10/5 minutes" works too); a malformed one stops the service at start-up. The defaults are far above
    # what a person does and far below what a script does; the test fixtures and the benchmarks raise them
    # (tweetshop_devstack.services.HIGH_RATE_LIMITS).
    # The client is the peer address, or the address X-Forwarded-For names when the peer is a trusted proxy.
    rate_limit_enabled: bool = Field(
        default=True, description="false: no rate limit and no credential lockout at all (for load tests only)"
    )
    rate_limit_writes: str = Field(
        default="300/minute",
        description="Any POST/PUT/PATCH/DELETE not named below (tweets, products, follows, refunds...), per client",
    )
    rate_limit_signups: str = Field(
        default="20/hour",
        description="POST /merchants and API key rotation (catalog), per client",
    )
    rate_limit_orders: str = Field(
        default="60/minute;1000/day",
        description="POST /orders (checkout; no login needed), per client",
    )
    rate_limit_courier_locations: str = Field(
        default="50/second",
        description="POST /shipments/{id}/locations (tracking), per courier token rather than per address",
    )
    rate_limit_credential_failures: str = Field(
        default="30/10 minutes",
        description=(
            "Refused credentials (operator key, merchant key, buyer or courier token) per client; past it, every "
            "request of that client that carries a credential answers 429 before the credential is checked"
        ),
    )
    trusted_proxies: str = Field(
        default="",
        description=(
            "Comma-separated addresses or networks (127.0.0.1, 10.0.0.0/8) of proxies in front of this service, e.g. "
            "the web app's gateway: only from them is X-Forwarded-For believed, and a trace context (traceparent) "
            "continued. Empty: the peer is the client, and every request starts its own trace"
        ),
    )
