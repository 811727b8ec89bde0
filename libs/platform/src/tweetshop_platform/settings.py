"""One settings base for every service; nothing else reads os.environ.

Every field is read from an environment variable named ``TWEETSHOP_<FIELD>``
(for example ``TWEETSHOP_DATABASE_URL``). Each process gets its own
environment, so the same names serve all four services.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_OPERATOR_KEY = "dev-operator-key"


class ServiceSettings(BaseSettings):
    """Settings every service shares: broker, database, HTTP, consumers, logging."""

    model_config = SettingsConfigDict(env_prefix="TWEETSHOP_", extra="ignore")

    service_name: str = Field(description="Service name: also its Postgres schema and role")
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8000, ge=1, le=65535)

    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_enable_idempotence: bool = Field(
        default=False,
        description="Idempotent producer: on against Apache Kafka, off against Tansu (no InitProducerId)",
    )
    kafka_acks: Literal["all", "1", "0"] = "all"
    kafka_topic_partitions: int = Field(default=6, ge=1, description="Partitions for topics this service creates")
    kafka_create_topics: bool = True
    kafka_fetch_max_wait_ms: int = Field(
        default=50,
        ge=1,
        le=5000,
        description="Longest a consumer's fetch waits for data; Tansu answers a waiting fetch only when it ends",
    )
    kafka_read_model_fetch_max_wait_ms: int = Field(
        default=250,
        ge=1,
        le=5000,
        description=(
            "The same for consumers that only keep read models (off a purchase's path): on Tansu every fetch costs "
            "the broker CPU whether data came or not, so these ask less often"
        ),
    )
    topic_namespace: str = Field(
        default="",
        pattern=r"^[a-z0-9_.-]*$",
        description="Prefix for every topic name; empty in production (tests use it to isolate runs)",
    )

    database_url: SecretStr = SecretStr("postgresql://postgres@localhost:5432/tweetshop")
    database_pool_min: int = 2
    database_pool_max: int = 10

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
        default=10, ge=1, le=5000, description="How long a consumer waits for its fetcher before it looks again"
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
            "any shipment or refund); set a strong one outside development"
        ),
    )

    max_request_body_bytes: int = 1_000_000
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
