"""The wiring every service shares: pool, migrations, topics, broker, subscribers, outbox relay, workers.

A service's main.py builds one ``ServiceRuntime``, registers its handlers and
background workers, and hands ``runtime.lifespan`` to its FastAPI app.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg
import structlog
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from tweetshop_contracts.topics import dlq_topic

from . import db
from .asyncapi import install_asyncapi
from .consumer import AfterCommit, Handler, ReliableSubscriber
from .http import install_common, install_operator_check
from .kafka import TopicNames, create_broker, create_producer, ensure_topics
from .kafka_security import client_security
from .lag import ConsumerLagMonitor
from .logs import configure_logging
from .openapi import install_error_documentation
from .outbox import OutboxRelay
from .ratelimit import RateLimiter
from .settings import InsecureSecretsError, ServiceSettings

log = structlog.get_logger(__name__)

Worker = Callable[[], Awaitable[None]]


@dataclass
class _Subscription:
    topic: str
    group_id: str
    handler: Handler
    after_commit: AfterCommit | None
    read_model: bool


class ServiceRuntime:
    """Owns a service's resources from start-up to shutdown."""

    def __init__(self, settings: ServiceSettings, *, package: str, produces: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.name = settings.service_name
        self.package = package
        self.topics = TopicNames(settings.topic_namespace)
        self.broker = create_broker(settings)
        # TLS and SASL arguments for any other Kafka client the service builds (tracking's live feed).
        self.kafka_security = client_security(settings)
        self.produces = produces
        self._pool: asyncpg.Pool | None = None
        self._subscriptions: list[_Subscription] = []
        self._workers: list[tuple[str, Worker]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._relay: OutboxRelay | None = None
        self._relay_producer: AIOKafkaProducer | None = None
        self._gc_frozen = False
        self._on_stop: list[Worker] = []
        self.subscribers: list[ReliableSubscriber] = []

    @property
    def pool(self) -> asyncpg.Pool:
        """The service's connection pool (only after start)."""
        if self._pool is None:
            raise RuntimeError("runtime not started")
        return self._pool

    def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        group: str | None = None,
        after_commit: AfterCommit | None = None,
        read_model: bool = False,
    ) -> None:
        """Handle ``topic`` in consumer group ``<service>.<group>`` (default: the handler's name).

        ``read_model``: the handler only keeps a copy of another service's data, off a purchase's path: its
        consumer waits longer per fetch (``kafka_read_model_fetch_max_wait_ms``), which costs the broker less.
        """
        # The topic namespace (empty in production) also isolates consumer groups between test runs.
        group_id = f"{self.topics.namespace}{self.name}.{group or getattr(handler, '__name__', 'handler')}"
        self._subscriptions.append(_Subscription(topic, group_id, handler, after_commit, read_model))

    def add_worker(self, name: str, worker: Worker) -> None:
        """Run ``worker`` in the background for the life of the service; restarted if it crashes."""
        self._workers.append((name, worker))

    def add_shutdown_hook(self, hook: Worker) -> None:
        """Run ``hook`` on the way out, after the workers have stopped (close clients they used)."""
        self._on_stop.append(hook)

    async def start(self) -> None:
        """Connect, migrate, create topics, start consuming, relaying and the workers."""
        s = self.settings
        s.check_secrets()  # before anything connects: outside development, no start with unsafe secrets
        gc.set_threshold(*s.gc_thresholds)
        self._pool = await db.wait_for_pool(
            s.database_url.get_secret_value(), self.name, min_size=s.database_pool_min, max_size=s.database_pool_max
        )
        migrations = db.platform_migrations() + db.load_migrations(
            self.name, resources.files(self.package) / "migrations"
        )
        await db.apply_migrations(self._pool, self.name, migrations)
        if s.kafka_create_topics:
            consumed = {sub.topic for sub in self._subscriptions}
            wanted = set(self.produces) | consumed | {dlq_topic(t) for t in consumed}
            await ensure_topics(
                s.kafka_bootstrap_servers,
                [self.topics.physical(t) for t in wanted],
                s.kafka_topic_partitions,
                security=self.kafka_security,
            )
        for sub in self._subscriptions:
            self.subscribers.append(
                ReliableSubscriber(
                    broker=self.broker,
                    pool=self._pool,
                    topics=self.topics,
                    topic=sub.topic,
                    group_id=sub.group_id,
                    handler=sub.handler,
                    after_commit=sub.after_commit,
                    max_retries=s.consumer_max_retries,
                    retry_backoff=s.consumer_retry_backoff_s,
                    fetch_max_wait_ms=(
                        s.kafka_read_model_fetch_max_wait_ms if sub.read_model else s.kafka_fetch_max_wait_ms
                    ),
                    batch_max_records=s.consumer_batch_max_records,
                    batch_timeout_ms=s.consumer_batch_timeout_ms,
                )
            )
        await self._start_broker()
        self._relay_producer = create_producer(s, client_suffix="outbox")
        await self._relay_producer.start()
        self._relay = OutboxRelay(
            self._pool,
            self._relay_producer,
            self.topics,
            self.name,
            batch_size=s.outbox_batch_size,
            poll_interval=s.outbox_poll_interval_s,
            retention_s=s.outbox_retention_s,
        )
        self._relay.start()
        for name, worker in self._workers:
            self._tasks.append(asyncio.create_task(self._supervise(name, worker), name=name))
        if self._subscriptions:
            lag = ConsumerLagMonitor(
                s.kafka_bootstrap_servers,
                self.topics,
                [(sub.group_id, sub.topic) for sub in self._subscriptions],
                security=self.kafka_security,
            )
            self._tasks.append(asyncio.create_task(self._supervise("consumer-lag", lag.run), name="consumer-lag"))
        if s.gc_freeze_after_start:
            # What lives this long lives as long as the process: a full collection need not walk it again and
            # again (gc.freeze, as CPython's docs suggest for long-running servers). Undone in stop().
            gc.collect()
            gc.freeze()
            self._gc_frozen = True
        log.info(
            "service started",
            http_port=s.http_port,
            subscriptions=[x.group_id for x in self._subscriptions],
            gc_thresholds=gc.get_threshold(),
            gc_frozen=gc.get_freeze_count(),
        )

    async def _start_broker(self) -> None:
        # KafkaBroker.start() starts subscribers one after another, and a new consumer group's JoinGroup
        # can take seconds (Tansu answers after ~5 s): start them all at once instead.
        await self.broker.connect()
        await asyncio.gather(*(sub.start() for sub in self.broker.subscribers))
        for publisher in self.broker.publishers:
            await publisher.start()
        self.broker.running = True

    async def stop(self) -> None:
        """Stop workers, relay, broker and pool, in that order."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for hook in self._on_stop:
            try:
                await hook()
            except Exception as exc:
                log.warning("shutdown hook failed", error=repr(exc))
        if self._relay is not None:
            await self._relay.stop()
        if self._relay_producer is not None:
            await self._relay_producer.stop()
        await self.broker.stop()
        if self._pool is not None:
            await self._pool.close()
        if self._gc_frozen:
            gc.unfreeze()  # a test process starts many services: what they leave behind may be collected again
            self._gc_frozen = False
        log.info("service stopped")

    async def _supervise(self, name: str, worker: Worker) -> None:
        delay = 0.5
        while True:
            try:
                await worker()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("background worker crashed; restarting", worker=name, error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)

    async def check_database(self) -> None:
        """Readiness: a query answers."""
        await self.pool.fetchval("SELECT 1")

    async def check_broker(self) -> None:
        """Readiness: the broker answers."""
        if not await self.broker.ping(timeout=2):
            raise ConnectionError("broker does not answer")

    @contextlib.asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        """FastAPI lifespan: start on the way in, stop on the way out."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()


def create_service_app(runtime: ServiceRuntime, *, title: str, description: str, version: str = "1.0.0") -> FastAPI:
    """A FastAPI app with the common surface, started and stopped with the runtime."""
    s = runtime.settings
    configure_logging(s.service_name, s.log_level, s.log_format)
    # Per-client limits on writes and refused credentials (429): a check every route runs first.
    limiter = RateLimiter.from_settings(s)
    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=runtime.lifespan,
        dependencies=limiter.dependencies(),
    )
    install_common(
        app,
        {"database": runtime.check_database, "broker": runtime.check_broker},
        max_body_bytes=s.max_request_body_bytes,
    )
    install_operator_check(app, s.operator_key)
    install_asyncapi(app, s.service_name)
    install_error_documentation(app)
    limiter.install(app)  # after install_common and install_error_documentation: wraps their handlers/document
    app.state.runtime = runtime
    return app


def serve(app: FastAPI, settings: ServiceSettings, **uvicorn_options: Any) -> None:
    """Run the app with uvicorn (what ``python -m <service>`` does); exit 1 first if a secret is unsafe."""
    try:
        settings.check_secrets()
    except InsecureSecretsError as exc:
        raise SystemExit(str(exc)) from None  # the message alone on stderr, no traceback
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # Who the client is, trusted_proxies decides (ratelimit.client_address), not uvicorn (it believes
        # X-Forwarded-For from 127.0.0.1 by default, so any local process could pose as any address).
        proxy_headers=False,
        **uvicorn_options,
    )
