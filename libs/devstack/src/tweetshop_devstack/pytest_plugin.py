"""pytest fixtures shared by every test in the repository: real Kafka, Postgres and Stripe, fresh databases, services.

Infrastructure is picked in this order, once per test session:

1. explicit settings: ``TWEETSHOP_TEST_KAFKA_BOOTSTRAP`` (and optionally
   ``TWEETSHOP_TEST_KAFKA_IS_APACHE=true|false``, probed otherwise),
   ``TWEETSHOP_TEST_POSTGRES_DSN`` (a superuser DSN), ``TWEETSHOP_TEST_STRIPE_BASE_URL``;
2. Docker via testcontainers when a Docker engine answers (Kafka and Postgres;
   ``TWEETSHOP_TEST_DOCKER=0`` skips it); localstripe has no official image;
3. the embedded parts: Tansu, embedded Postgres (tuned for speed), localstripe in memory.

Fixtures: ``kafka_bootstrap``, ``kafka_is_apache``, ``postgres_admin_dsn``,
``stripe_base_url`` (session); ``database`` and ``service_process`` (per test).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .infra import (
    LOCALHOST,
    EmbeddedPostgres,
    LocalStripe,
    ManagedProcess,
    Tansu,
    answers_200,
    free_port,
    listens_on,
    register_stripe_webhook,
    stop_all,
)
from .services import BY_NAME, DEV_STRIPE_WEBHOOK_SECRET, ServiceDef, dev_password, service_dsn, service_env
from .testing import create_database, drop_database
from .testing import dsn_with_database as dsn_with_database  # re-exported: importable from here as before
from .testing import eventually as eventually
from .testing import run_sync as run_sync

ENV_KAFKA = "TWEETSHOP_TEST_KAFKA_BOOTSTRAP"
ENV_KAFKA_IS_APACHE = "TWEETSHOP_TEST_KAFKA_IS_APACHE"
ENV_POSTGRES = "TWEETSHOP_TEST_POSTGRES_DSN"
ENV_STRIPE = "TWEETSHOP_TEST_STRIPE_BASE_URL"
ENV_DOCKER = "TWEETSHOP_TEST_DOCKER"
ENV_KAFKA_IMAGE = "TWEETSHOP_TEST_KAFKA_IMAGE"
ENV_POSTGRES_IMAGE = "TWEETSHOP_TEST_POSTGRES_IMAGE"

SERVICE_READY_TIMEOUT_S = 60.0
_LOG_TAIL_LINES = 60


@contextlib.contextmanager
def scratch_processes(
    request: pytest.FixtureRequest, postgres_admin_dsn: str, kafka: KafkaServer, log_dir: Path
) -> Iterator[ServiceProcesses]:
    """Service processes on their own fresh database, for a fixture wider than one test (``service_process``
    is per test); every process is stopped and the database dropped at the end."""
    with scratch_database(postgres_admin_dsn) as database:
        processes = ServiceProcesses(request, database, kafka, log_dir)
        try:
            yield processes
        finally:
            processes.stop_all()


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@functools.cache
def docker_engine_answers() -> bool:
    """True when a Docker engine answers a ping (checked once, failing fast when there is none)."""
    if os.environ.get(ENV_DOCKER, "").strip() and not _truthy(os.environ[ENV_DOCKER]):
        return False
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False  # where docker.from_env() would look: skip importing the client (0.6 s) for nothing
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


# --- session infrastructure ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaServer:
    """The broker the tests use."""

    bootstrap_servers: str
    is_apache: bool  # False for Tansu: no idempotent producer, no transactions
    source: str  # "env" | "docker" | "embedded"


@dataclass(frozen=True)
class PostgresServer:
    """The Postgres server the tests use."""

    admin_dsn: str  # a superuser, database "postgres"
    source: str


async def _supports_idempotent_producer(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError, KafkaError

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(producer.start(), 20)
    except (KafkaConnectionError, TimeoutError) as exc:
        raise RuntimeError(f"{ENV_KAFKA}={bootstrap}: the broker does not answer ({exc!r})") from exc
    except KafkaError:
        # Tansu answers InitProducerId with an error; Apache Kafka grants a producer id.
        return False
    finally:
        await producer.stop()
    return True


@pytest.fixture
def no_tweetshop_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings built in the test see only what the test sets: no TWEETSHOP_* from the shell or a fixture.

    Use it with ``pytestmark = pytest.mark.usefixtures("no_tweetshop_environment")``.
    """
    for key in list(os.environ):
        if key.upper().startswith("TWEETSHOP_"):
            monkeypatch.delenv(key)
    yield


@pytest.fixture(scope="session")
def devstack_tmp_dir() -> Iterator[Path]:
    """A private directory for the embedded servers' data and logs, removed after the session."""
    # Not under pytest's basetemp: that one is 0700 and Postgres may run as another system user.
    path = Path(tempfile.mkdtemp(prefix="tweetshop-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_server(devstack_tmp_dir: Path) -> Iterator[KafkaServer]:
    """The session's broker: env, else Docker (Apache Kafka), else Tansu."""
    explicit = os.environ.get(ENV_KAFKA, "").strip()
    if explicit:
        forced = os.environ.get(ENV_KAFKA_IS_APACHE, "").strip()
        is_apache = _truthy(forced) if forced else run_sync(_supports_idempotent_producer(explicit))
        yield KafkaServer(explicit, is_apache, "env")
        return
    if docker_engine_answers():
        from testcontainers.community.kafka import KafkaContainer

        image = os.environ.get(ENV_KAFKA_IMAGE, "confluentinc/cp-kafka:7.6.0")
        with KafkaContainer(image).with_kraft() as container:
            yield KafkaServer(container.get_bootstrap_server(), True, "docker")
        return
    tansu = Tansu(free_port(), devstack_tmp_dir / "logs")
    tansu.start()
    try:
        yield KafkaServer(tansu.bootstrap_servers, False, "embedded")
    finally:
        tansu.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_server: KafkaServer) -> str:
    """``bootstrap_servers`` of the session's broker."""
    return kafka_server.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_is_apache(kafka_server: KafkaServer) -> bool:
    """True against Apache Kafka (idempotent producer on), False against Tansu (off)."""
    return kafka_server.is_apache


@pytest.fixture(scope="session")
def postgres_server(devstack_tmp_dir: Path) -> Iterator[PostgresServer]:
    """The session's Postgres: env, else Docker, else embedded (fsync off)."""
    explicit = os.environ.get(ENV_POSTGRES, "").strip()
    if explicit:
        yield PostgresServer(explicit, "env")
        return
    if docker_engine_answers():
        from testcontainers.community.postgres import PostgresContainer

        image = os.environ.get(ENV_POSTGRES_IMAGE, "postgres:17-alpine")
        container = PostgresContainer(image, username="postgres", password="postgres", dbname="postgres", driver=None)
        container.with_command(
            "postgres -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        with container:
            yield PostgresServer(container.get_connection_url(driver=None), "docker")
        return
    postgres = EmbeddedPostgres(
        devstack_tmp_dir / "pgdata", free_port(), devstack_tmp_dir / "logs", tuned_for_tests=True
    )
    postgres.start()
    try:
        yield PostgresServer(postgres.admin_dsn, "embedded")
    finally:
        postgres.stop()


@pytest.fixture(scope="session")
def postgres_admin_dsn(postgres_server: PostgresServer) -> str:
    """Superuser DSN of the session's Postgres (database ``postgres``)."""
    return postgres_server.admin_dsn


@pytest.fixture(scope="session")
def stripe_base_url(devstack_tmp_dir: Path) -> Iterator[str]:
    """Base URL of a Stripe API stand-in: env, else localstripe in memory (never its shared pickle file)."""
    explicit = os.environ.get(ENV_STRIPE, "").strip()
    if explicit:
        yield explicit.rstrip("/")
        return
    stripe = LocalStripe(free_port(), devstack_tmp_dir / "logs", state_file=None)
    stripe.start()
    try:
        yield stripe.base_url
    finally:
        stripe.stop()


# --- a fresh database per test -------------------------------------------------------------------------------


class ScratchDatabase:
    """A database created for one test and dropped after it; each service gets its own role and schema in it."""

    def __init__(self, name: str, admin_dsn: str) -> None:
        self.name = name
        self.admin_dsn = admin_dsn  # superuser, connected to this database

    def service_dsn(self, service: str) -> str:
        """DSN of ``service``'s own role in this database (after ``provision``)."""
        return service_dsn(self.admin_dsn, service, dev_password(service))

    async def provision(self, service: str) -> str:
        """Create ``service``'s role and schema here (idempotent) and return its DSN."""
        from tweetshop_platform.db import provision_service

        await provision_service(self.admin_dsn, service, dev_password(service))
        return self.service_dsn(service)

    def provision_sync(self, service: str) -> str:
        """``provision`` for sync code."""
        return run_sync(self.provision(service))


@contextlib.contextmanager
def scratch_database(postgres_admin_dsn: str) -> Iterator[ScratchDatabase]:
    """A fresh database ``t_<random>`` on the server, dropped at the end."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    run_sync(create_database(postgres_admin_dsn, name))
    try:
        yield ScratchDatabase(name, dsn_with_database(postgres_admin_dsn, name))
    finally:
        run_sync(drop_database(postgres_admin_dsn, name))


@pytest.fixture
def database(postgres_admin_dsn: str) -> Iterator[ScratchDatabase]:
    """A fresh database ``t_<random>`` on the session's server, dropped after the test."""
    with scratch_database(postgres_admin_dsn) as scratch:
        yield scratch


# --- service processes ---------------------------------------------------------------------------------------


class RunningService:
    """One service process started by ``service_process``; stopped by the fixture whatever the test does."""

    def __init__(self, name: str, port: int, process: ManagedProcess, database_url: str | None) -> None:
        self.name = name
        self.port = port
        self.base_url = f"http://{LOCALHOST}:{port}"
        self.database_url = database_url
        self.process = process

    @property
    def pid(self) -> int | None:
        """Pid of the current process (changes on restart)."""
        return self.process.pid

    @property
    def log_path(self) -> Path:
        """Where its stdout and stderr go (appended across restarts)."""
        return self.process.log_path

    def is_running(self) -> bool:
        """True while the process runs."""
        return self.process.is_running()

    def tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of its log."""
        return self.process.tail(lines)

    def wait_ready(self, timeout: float = SERVICE_READY_TIMEOUT_S) -> None:
        """Wait until ``GET /readyz`` answers 200; fails with the log tail if it exits or time runs out."""
        self.process.wait_until_ready(
            lambda: listens_on(self.pid, self.port) and answers_200(f"{self.base_url}/readyz"),
            timeout=timeout,
            what=f"GET {self.base_url}/readyz == 200",
        )

    def start(self, *, wait_ready: bool = True, timeout: float = SERVICE_READY_TIMEOUT_S) -> None:
        """Start it again (same port, database and topics) after ``stop`` or ``kill``."""
        self.process.start()
        if wait_ready:
            self.wait_ready(timeout)

    def stop(self, grace: float = 10.0) -> int | None:
        """Graceful stop: SIGTERM, SIGKILL after ``grace`` seconds; returns the exit code."""
        return self.process.stop(grace)

    def kill(self) -> int | None:
        """SIGKILL at once: a crash, as far as the service can tell."""
        return self.process.kill()

    def restart(self, *, wait_ready: bool = True, timeout: float = SERVICE_READY_TIMEOUT_S) -> None:
        """Graceful stop (if running), then start again."""
        self.stop()
        self.start(wait_ready=wait_ready, timeout=timeout)


_RUNNING_KEY = pytest.StashKey[list[RunningService]]()


class ServiceProcesses:
    """Starts ``python -m <service>`` processes for one test, wired to the test's database, broker and Stripe."""

    def __init__(
        self, request: pytest.FixtureRequest, database: ScratchDatabase, kafka: KafkaServer, log_dir: Path
    ) -> None:
        self._request = request
        self.database = database
        self.kafka = kafka
        self.log_dir = log_dir
        # Every topic of this test's services is prefixed with it, so tests cannot see each other's messages.
        self.topic_namespace = f"t{uuid.uuid4().hex[:10]}."
        self._ports: dict[str, int] = {}
        self._running: list[RunningService] = []
        self._webhooks: list[tuple[str, str, str]] = []  # (stripe base url, webhook id, url)
        request.node.stash.setdefault(_RUNNING_KEY, [])

    @property
    def running(self) -> list[RunningService]:
        """Every service started in this test, in start order."""
        return list(self._running)

    def port_for(self, service: str) -> int:
        """The port the first instance of ``service`` gets in this test (known before it starts)."""
        if service not in self._ports:
            self._ports[service] = free_port()
        return self._ports[service]

    def url_for(self, service: str) -> str:
        """Base URL the first instance of ``service`` has (or will have) in this test."""
        return f"http://{LOCALHOST}:{self.port_for(service)}"

    def start(
        self,
        service: str | ServiceDef,
        env: Mapping[str, str] | None = None,
        *,
        topic_namespace: str | None = None,
        wait_ready: bool = True,
        timeout: float = SERVICE_READY_TIMEOUT_S,
    ) -> RunningService:
        """Start a service on a free port with its own role in the test database; wait for ``/readyz`` by default."""
        running = self._spawn(service, env, topic_namespace)
        if wait_ready:
            running.wait_ready(timeout)
        return running

    def start_many(
        self,
        services: Iterable[str | ServiceDef],
        env: Mapping[str, str] | None = None,
        *,
        topic_namespace: str | None = None,
        timeout: float = SERVICE_READY_TIMEOUT_S,
    ) -> list[RunningService]:
        """Start several services at once, then wait until each is ready (each one takes seconds to start)."""
        started = [self._spawn(service, env, topic_namespace) for service in services]
        for running in started:
            running.wait_ready(timeout)
        return started

    def _spawn(
        self, service: str | ServiceDef, env: Mapping[str, str] | None, topic_namespace: str | None
    ) -> RunningService:
        definition = BY_NAME[service] if isinstance(service, str) else service
        first = not any(r.name == definition.name for r in self._running)
        port = self.port_for(definition.name) if first else free_port()
        database_url = self.database.provision_sync(definition.name) if definition.uses_database else None
        stripe_base_url = self._request.getfixturevalue("stripe_base_url") if definition.uses_stripe else None
        variables = service_env(
            definition,
            http_port=port,
            database_url=database_url,
            kafka_bootstrap=self.kafka.bootstrap_servers,
            kafka_idempotence=self.kafka.is_apache,
            stripe_base_url=stripe_base_url,
            tracking_public_url=self.url_for("tracking"),
            service_urls={
                **{name: self.url_for(name) for name in ("catalog", "feed", "checkout", "tracking")},
                **({"stripe": self._request.getfixturevalue("stripe_base_url")} if definition.name == "webapp" else {}),
            },
            topic_namespace=self.topic_namespace if topic_namespace is None else topic_namespace,
            high_rate_limits=True,  # one address sends what many buyers and couriers would
        )
        instance = definition.name if first else f"{definition.name}-{port}"
        process = ManagedProcess(
            instance,
            [sys.executable, "-m", definition.module],
            log_path=self.log_dir / f"{instance}.log",
            env={**os.environ, **variables, **(env or {})},
        )
        running = RunningService(definition.name, port, process, database_url)
        self._running.append(running)
        self._request.node.stash[_RUNNING_KEY].append(running)
        if stripe_base_url is not None:
            webhook_id = f"test-{self.topic_namespace}{port}"
            url = f"{running.base_url}/webhooks/stripe"
            register_stripe_webhook(stripe_base_url, webhook_id, url, DEV_STRIPE_WEBHOOK_SECRET)
            self._webhooks.append((stripe_base_url, webhook_id, url))
        running.start(wait_ready=False)
        return running

    def stop_all(self) -> None:
        """Stop every service this test started (at once), and silence their Stripe webhooks."""
        stop_all([r.process for r in self._running], grace=10.0)
        for base_url, webhook_id, url in self._webhooks:
            # localstripe cannot delete a webhook; an empty event list makes it deliver nothing more.
            with contextlib.suppress(Exception):
                register_stripe_webhook(base_url, webhook_id, url, DEV_STRIPE_WEBHOOK_SECRET, events=[])


@pytest.fixture
def service_process(
    request: pytest.FixtureRequest, database: ScratchDatabase, kafka_server: KafkaServer, tmp_path: Path
) -> Iterator[ServiceProcesses]:
    """Factory: ``service_process.start("catalog")`` → a RunningService; all are stopped after the test."""
    processes = ServiceProcesses(request, database, kafka_server, tmp_path / "services")
    try:
        yield processes
    finally:
        processes.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """On failure, add the tail of every service log of the test to the report."""
    report = yield
    if report.failed:
        for running in item.stash.get(_RUNNING_KEY, []):
            report.sections.append(
                (f"{running.name} log, last {_LOG_TAIL_LINES} lines ({running.log_path})", running.tail())
            )
    return report
