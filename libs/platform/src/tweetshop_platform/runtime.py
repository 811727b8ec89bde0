"""The wiring every service shares: pool, migrations, topics, broker, subscribers, outbox relay, workers.

A service's main.py builds one ``ServiceRuntime``, maps each consumer group the system declares for it
(``tweetshop_contracts.system``) to its handler (``subscribe_declared``), registers its background workers,
and hands ``runtime.lifespan`` to its FastAPI app. Topics, groups, their settings and what the service
produces are read from the declaration, not written again here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from tweetshop_contracts.events import event_types_of
from tweetshop_contracts.system import SYSTEM, Group, Service, System
from tweetshop_contracts.topics import DLQ_SUFFIX, dlq_topic

from . import db, telemetry
from .asyncapi import install_asyncapi
from .consumer import AfterCommit, Handler, ReliableSubscriber, handled_types
from .http import install_common, install_operator_check, run_uvicorn
from .kafka import TopicNames, create_broker, create_producer, ensure_topics
from .kafka_security import client_security
from .lag import ConsumerLagMonitor
from .logs import configure_logging
from .openapi import install_error_documentation
from .outbox import OutboxRelay
from .proxies import parse_trusted_proxies
from .ratelimit import RateLimiter
from .settings import InsecureSecretsError, ServiceSettings

log = structlog.get_logger(__name__)

Worker = Callable[[], Awaitable[None]]


class DeclarationMismatch(ValueError):
    """What a service wires differs from what the system declares for it: it does not start."""


@dataclass(frozen=True)
class PlannedSubscription:
    """One reliable subscription the declaration asks of a service: its group, topic, handler and fetch."""

    topic: str
    handler: Handler
    after_commit: AfterCommit | None
    declared: Group

    @property
    def group(self) -> str:
        return self.declared.name

    @property
    def read_model(self) -> bool:
        return self.declared.read_model


@dataclass(frozen=True)
class _Subscription(PlannedSubscription):
    """A planned subscription as the runtime runs it, under its group id (``<namespace><service>.<group>``)."""

    group_id: str


@dataclass(frozen=True)
class Fetch:
    """How a reliable group's consumer fetches: its wait, the bytes that end the wait early, its quiet pacing."""

    max_wait_ms: int
    min_bytes: int
    quiet: tuple[int, float] | None  # (wait, after seconds) once quiet; None: never slows (consumer.FetchPacer)


def fetch_of(settings: ServiceSettings, group: Group) -> Fetch:
    """The fetch a group's consumer runs with, from the service's settings and what the declaration says of it.

    - A read model waits longest (``kafka_read_model_fetch_max_wait_ms``) and is answered as soon as any record
      is there (1 byte): a new price or tweet must not sit out that wait. With ``kafka_fetch_min_bytes`` there,
      the browser test that reprices a product and then opens the timeline saw the old price once under CI's load.
    - A patient group (``Group.patient``: no buyer waits on it within a purchase) fetches as a read model does.
      Tansu (0.6) goes through the partitions again after half and after three quarters of a wait of 250 ms or
      more while the fetch has fewer than its minimum bytes, and each pass lists the batches of each partition
      with new data: with 1 byte a fetch that found records ends after the first pause.
    - Every other group waits ``kafka_fetch_max_wait_ms`` and for ``kafka_fetch_min_bytes``: under load it takes
      a wait's records as one batch.
    - A group on the purchase's path never slows down when quiet; every other one does (``quiet_fetch``).
    """
    long_wait = group.read_model or group.patient
    return Fetch(
        max_wait_ms=settings.kafka_read_model_fetch_max_wait_ms if long_wait else settings.kafka_fetch_max_wait_ms,
        min_bytes=1 if long_wait else settings.kafka_fetch_min_bytes,
        quiet=None if group.purchase_path else settings.quiet_fetch,
    )


def _handler_name(handler: Handler) -> str:
    return f"{getattr(handler, '__module__', '?')}:{getattr(handler, '__name__', repr(handler))}"


def plan_subscriptions(
    service: Service,
    handlers: Mapping[str, Handler],
    after_commit: Mapping[str, AfterCommit] | None = None,
) -> list[PlannedSubscription]:
    """The subscriptions of ``service``'s declared reliable groups with the handlers main.py maps to them.

    Refuses (DeclarationMismatch) a declared group without a handler, a handler for a group the declaration does
    not have (or for a live view, which the service runs itself), an ``after_commit`` of a group without a
    handler, a handler other than the one a rebuildable read model names (``tweetshop replay`` runs that one),
    and a handler whose ``@handles`` differs from the event types the declaration says the group acts on.
    """
    after_commit = after_commit or {}
    declared = {g.name: g for g in service.reliable_groups}
    live = {g.name for g in service.live_views}
    problems = []
    for name in handlers:
        if name in live:
            problems.append(f"{service.name}.{name} is a live view: the service runs it (runtime.live_view)")
        elif name not in declared:
            problems.append(f"a handler for {service.name}.{name}, a group the system does not declare")
    problems += [f"no handler for the declared group {service.name}.{n}" for n in declared if n not in handlers]
    problems += [
        f"after_commit for {service.name}.{n}, a group without a handler" for n in after_commit if n not in handlers
    ]
    for name, group in declared.items():
        handler = handlers.get(name)
        if handler is not None and group.rebuild is not None and _handler_name(handler) != group.rebuild.handler:
            problems.append(
                f"{service.name}.{name} is handled by {_handler_name(handler)}, but its read model is rebuilt by "
                f"{group.rebuild.handler} (tweetshop_contracts.system)"
            )
        for reads in group.reads if handler is not None else ():
            try:
                acts_on = handled_types(handler, reads.topic)
            except ValueError as exc:
                problems.append(f"{service.name}.{name}: {exc}")
                continue
            if acts_on != (set(reads.handles) or event_types_of(reads.topic)):
                problems.append(
                    f"{service.name}.{name} acts on {', '.join(sorted(acts_on))} of {reads.topic} (its @handles), "
                    f"but the declaration says {', '.join(reads.handles) or 'every type'} (tweetshop_contracts.system)"
                )
    if problems:
        raise DeclarationMismatch(
            f"{service.name}'s subscriptions differ from tweetshop_contracts.system:\n  - " + "\n  - ".join(problems)
        )
    return [
        PlannedSubscription(topic, handlers[group.name], after_commit.get(group.name), group)
        for group in service.reliable_groups
        for topic in group.topics
    ]


class ServiceRuntime:
    """Owns a service's resources from start-up to shutdown."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        package: str,
        produces: tuple[str, ...] | None = None,
        system: System = SYSTEM,
    ) -> None:
        self.settings = settings
        self.name = settings.service_name
        self.package = package
        self.system = system
        # What the system declares for this service (None for a service it does not know: a test's).
        self.declared: Service | None = system.find(self.name)
        self.topics = TopicNames(settings.topic_namespace)
        # Distributed tracing (telemetry.py): None while it is off, and then nothing traces.
        self.tracer = telemetry.tracer(self.name, settings.tracing)
        self.broker = create_broker(settings)
        # TLS and SASL arguments for any other Kafka client the service builds (tracking's live feed).
        self.kafka_security = client_security(settings)
        owned = tuple(t.name for t in self.declared.owns) if self.declared is not None else ()
        if produces is None:
            produces = owned
        elif self.declared is not None and set(produces) != set(owned):
            raise DeclarationMismatch(
                f"{self.name} produces {sorted(produces)}, but owns {sorted(owned)} in tweetshop_contracts.system"
            )
        self.produces = produces
        self._pool: asyncpg.Pool | None = None
        self._background_pool: asyncpg.Pool | None = None
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
        """The HTTP API's connection pool (only after start)."""
        if self._pool is None:
            raise RuntimeError("runtime not started")
        return self._pool

    @property
    def background_pool(self) -> asyncpg.Pool:
        """The pool of the work behind the API (only after start): the consumers, the outbox relay and the
        background workers (``add_worker``'s, which ask for it). A bulkhead: the requests' pool may be drained by a
        flood of them (every buyer of a drop asks the database once) while a payment waits to record its outcome;
        with pools apart, neither queues behind the other."""
        if self._background_pool is None:
            raise RuntimeError("runtime not started")
        return self._background_pool

    def subscribe(
        self, topic: str, handler: Handler, declared: Group, *, after_commit: AfterCommit | None = None
    ) -> None:
        """Handle ``topic`` in consumer group ``<service>.<group>`` of the ``declared`` group, which also says how
        its consumer fetches (``fetch_of``: read model, purchase's path, patient)."""
        # The topic namespace (empty in production) also isolates consumer groups between test runs.
        group_id = f"{self.topics.namespace}{self.name}.{declared.name}"
        self._subscriptions.append(_Subscription(topic, handler, after_commit, declared, group_id))

    def subscribe_declared(
        self, handlers: Mapping[str, Handler], *, after_commit: Mapping[str, AfterCommit] | None = None
    ) -> None:
        """Run every reliable consumer group the system declares for this service, each with its handler here.

        ``handlers`` maps each declared group's name to its handler (``{"orders": handlers.on_order_event}``);
        ``after_commit`` the groups that have an after-commit hook to it. Topic, group id ``<service>.<group>``
        and fetch settings come from the declaration. A declared group without a handler, or a handler for a
        group that is not declared, is refused here (DeclarationMismatch): the service does not start.
        """
        if self.declared is None:
            raise DeclarationMismatch(f"{self.name} is not a service of tweetshop_contracts.system")
        for planned in plan_subscriptions(self.declared, handlers, after_commit):
            self.subscribe(planned.topic, planned.handler, planned.declared, after_commit=planned.after_commit)

    def live_view(self, name: str) -> Group:
        """The declared live view (fan-out group) ``name`` the service runs itself: its topics, and
        ``<service>.<name>`` as the prefix of each process's group id."""
        if self.declared is None:
            raise DeclarationMismatch(f"{self.name} is not a service of tweetshop_contracts.system")
        group = self.declared.group(name)
        if not group.fan_out:
            raise DeclarationMismatch(f"{self.name}.{name} is not a live view: subscribe_declared runs it")
        return group

    def check_declaration(self) -> None:
        """Refuse (DeclarationMismatch) subscriptions that differ from the declared reliable groups."""
        if self.declared is None:
            return
        declared = {(g.name, t) for g in self.declared.reliable_groups for t in g.topics}
        wired = {(sub.group, sub.topic) for sub in self._subscriptions}
        if wired != declared:
            missing = ", ".join(f"{self.name}.{g} on {t}" for g, t in sorted(declared - wired)) or "none"
            extra = ", ".join(f"{self.name}.{g} on {t}" for g, t in sorted(wired - declared)) or "none"
            raise DeclarationMismatch(
                f"{self.name} does not run the consumer groups tweetshop_contracts.system declares "
                f"(declared but not subscribed: {missing}; subscribed but not declared: {extra}): "
                "map each declared group to its handler with runtime.subscribe_declared"
            )

    def _topic_settings(self, logical: str) -> tuple[dict[str, str], int]:
        """The configs and replication factor ``logical`` (a topic or a dead-letter topic) is created with."""
        setting = self.settings.kafka_topic_replication_factor
        base = logical.removesuffix(DLQ_SUFFIX)
        if base not in self.system.topic_names():
            return {}, setting or 1  # a topic the declaration does not know (a test's): the broker's defaults
        return self.system.config(logical).kafka_configs(), setting or self.system.topic(base).replication_factor

    def add_worker(self, name: str, worker: Worker) -> None:
        """Run ``worker`` in the background for the life of the service; restarted if it crashes. A worker that
        uses the database takes its connections from ``background_pool``."""
        self._workers.append((name, worker))

    def add_shutdown_hook(self, hook: Worker) -> None:
        """Run ``hook`` on the way out, after the workers have stopped (close clients they used)."""
        self._on_stop.append(hook)

    async def start(self) -> None:
        """Connect, migrate, create topics, start consuming, relaying and the workers."""
        s = self.settings
        s.check_secrets()  # before anything connects: outside development, no start with unsafe secrets
        self.check_declaration()
        gc.set_threshold(*s.gc_thresholds)
        self._pool = await db.wait_for_pool(
            s.database_url.get_secret_value(), self.name, min_size=s.database_pool_min, max_size=s.database_pool_max
        )
        migrations = db.platform_migrations() + db.load_migrations(
            self.name, resources.files(self.package) / "migrations"
        )
        await db.apply_migrations(self._pool, self.name, migrations)
        self._background_pool = await db.wait_for_pool(
            s.database_url.get_secret_value(), self.name, min_size=1, max_size=s.database_background_pool_max
        )
        if s.kafka_create_topics:
            consumed = {sub.topic for sub in self._subscriptions}
            wanted = set(self.produces) | consumed | {dlq_topic(t) for t in consumed}
            by_partitions: dict[int, list[str]] = {}
            for logical in sorted(wanted):
                base = logical.removesuffix(DLQ_SUFFIX)
                declared = self.system.topic(base).partitions if base in self.system.topic_names() else None
                by_partitions.setdefault(declared or s.kafka_topic_partitions, []).append(logical)
            for partitions, names in by_partitions.items():
                settings_of = {self.topics.physical(t): self._topic_settings(t) for t in names}
                await ensure_topics(
                    s.kafka_bootstrap_servers,
                    list(settings_of),
                    partitions,
                    security=self.kafka_security,
                    configs={name: configs for name, (configs, _) in settings_of.items() if configs},
                    replication_factor={name: factor for name, (_, factor) in settings_of.items()},
                )
        for sub in self._subscriptions:
            fetch = fetch_of(s, sub.declared)
            self.subscribers.append(
                ReliableSubscriber(
                    broker=self.broker,
                    pool=self._background_pool,
                    topics=self.topics,
                    topic=sub.topic,
                    group_id=sub.group_id,
                    handler=sub.handler,
                    after_commit=sub.after_commit,
                    max_retries=s.consumer_max_retries,
                    retry_backoff=s.consumer_retry_backoff_s,
                    fetch_max_wait_ms=fetch.max_wait_ms,
                    fetch_min_bytes=fetch.min_bytes,
                    quiet_fetch=fetch.quiet,
                    batch_max_records=s.consumer_batch_max_records,
                    batch_timeout_ms=s.consumer_batch_timeout_ms,
                    tracer=self.tracer,
                )
            )
        await self._start_broker()
        self._relay_producer = create_producer(s, client_suffix="outbox")
        await self._relay_producer.start()
        self._relay = OutboxRelay(
            self._background_pool,
            self._relay_producer,
            self.topics,
            self.name,
            batch_size=s.outbox_batch_size,
            poll_interval=s.outbox_poll_interval_s,
            retention_s=s.outbox_retention_s,
            round_interval=s.outbox_round_interval_ms / 1000,
            tracer=self.tracer,
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
        for pool in (self._background_pool, self._pool):
            if pool is not None:
                await pool.close()
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
        tracer=runtime.tracer,
        trusted_proxies=parse_trusted_proxies(s.trusted_proxies),
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
    run_uvicorn(app, settings.http_host, settings.http_port, **uvicorn_options)
