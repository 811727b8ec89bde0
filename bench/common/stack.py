"""The system under test, started as `make run` starts it but on free ports in a private directory.

``BenchInfra`` owns the parts underneath: Tansu, embedded Postgres, localstripe
(persistence off) and the payment stand-in, each a child process stopped by its
pid. Either part can instead be one that already runs (``kafka_bootstrap``,
``admin_dsn``), as the smoke test does with pytest's session fixtures.

``ServiceStack`` is one copy of the shop on that infrastructure: its own database,
its own topic namespace, the four services as separate processes (the same
``python -m <service>`` and environment `make run` uses), checkout's Stripe
webhook registered, and a merchant, a product with a huge stock and its tweet
created through the public HTTP APIs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tweetshop_contracts.system import SYSTEM
from tweetshop_devstack.infra import (
    LOCALHOST,
    EmbeddedPostgres,
    LocalStripe,
    ManagedProcess,
    StartupError,
    Tansu,
    answers_200,
    free_port,
    listens_on,
    register_stripe_webhook,
    stop_all,
)
from tweetshop_devstack.run import MAKE_RUN_DEFAULTS
from tweetshop_devstack.seed import following_retry_after
from tweetshop_devstack.services import (
    BY_NAME,
    DEV_STRIPE_WEBHOOK_SECRET,
    dev_password,
    service_dsn,
    service_env,
)
from tweetshop_devstack.testing import create_database, dsn_with_database

REPO_ROOT = Path(__file__).resolve().parents[2]
# How long the generators keep an idle connection to a service: under uvicorn's own keep-alive (5 s), so no request
# goes out on a connection the server is closing at that moment (aiohttp's default is 15 s; the drop's late buyers
# then met ClientOSError / ServerDisconnectedError, and one of them three times in a row).
CLIENT_KEEPALIVE_S = 3.0
# Every declared service with a database and Kafka (the APIs; the web app is not benchmarked).
SERVICE_NAMES: tuple[str, ...] = tuple(s.name for s in SYSTEM.services if s.database and s.kafka)
READY_TIMEOUT_S = 120.0
PRODUCT_STOCK = 1_000_000
PRODUCT_PRICE_MINOR = 1500


def stop_on_signals() -> None:
    """End the benchmark on SIGTERM (``kill PID``, a job's timeout) as on Ctrl-C: its ``finally`` blocks stop the
    broker, Postgres, the stand-ins and the services, each by its pid. Without this a SIGTERM killed the
    interpreter at once and left all of them running, a whole stack burning the cores the next run measures.

    Once: the signals that come after the first are ignored while the stack stops (Ctrl-C reaches ``run_all``
    and its child benchmark both, and ``run_all`` then passes a SIGTERM on), so nothing cuts the stopping short.
    A stuck stop is ended with SIGKILL."""

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


class BenchInfra:
    """Broker, database, localstripe and the payment stand-in for one benchmark run; stopped by pid."""

    def __init__(
        self,
        *,
        run_dir: Path | None = None,
        kafka_bootstrap: str | None = None,
        admin_dsn: str | None = None,
        localstripe: bool = True,
        standin: bool = True,
        standin_latency_ms: float = 100.0,
        durable_postgres: bool = True,
    ) -> None:
        # Not under a 0700 pytest dir: Postgres runs as its own system user when we are root.
        self._own_dir = run_dir is None
        self.run_dir = run_dir or Path(tempfile.mkdtemp(prefix="tweetshop-bench-"))
        self.logs_dir = self.run_dir / "logs"
        self.tansu = Tansu(free_port(), self.logs_dir) if kafka_bootstrap is None else None
        # `make run` keeps Postgres durable (fsync on); the tuned variant is what the test fixtures use.
        self.postgres = (
            EmbeddedPostgres(
                self.run_dir / "pgdata",
                free_port(),
                self.logs_dir,
                tuned_for_tests=not durable_postgres,
                stat_statements=True,
            )
            if admin_dsn is None
            else None
        )
        self.durable_postgres = durable_postgres if admin_dsn is None else None
        self._kafka_bootstrap = kafka_bootstrap
        self._admin_dsn = admin_dsn
        self.localstripe = LocalStripe(free_port(), self.logs_dir, state_file=None) if localstripe else None
        self.standin_port = free_port()
        self.standin = (
            ManagedProcess(
                "stripe-standin",
                [
                    sys.executable,
                    "-m",
                    "bench.common.stripe_standin",
                    "--port",
                    str(self.standin_port),
                    "--latency-ms",
                    str(standin_latency_ms),
                ],
                log_path=self.logs_dir / "stripe-standin.log",
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                cwd=REPO_ROOT,
            )
            if standin
            else None
        )

    @property
    def kafka_bootstrap(self) -> str:
        """``bootstrap_servers`` of the broker."""
        if self.tansu is not None:
            return self.tansu.bootstrap_servers
        assert self._kafka_bootstrap is not None
        return self._kafka_bootstrap

    @property
    def admin_dsn(self) -> str:
        """Superuser DSN (database ``postgres``)."""
        if self.postgres is not None:
            return self.postgres.admin_dsn
        assert self._admin_dsn is not None
        return self._admin_dsn

    @property
    def localstripe_url(self) -> str:
        """Base URL of localstripe (persistence off)."""
        assert self.localstripe is not None, "started without localstripe"
        return self.localstripe.base_url

    @property
    def standin_url(self) -> str:
        """Base URL of the payment stand-in."""
        return f"http://{LOCALHOST}:{self.standin_port}"

    def pids(self) -> dict[str, int | None]:
        """Pids of the infrastructure processes this object started."""
        out: dict[str, int | None] = {}
        if self.postgres is not None:
            out["postgres"] = self.postgres.pid
        if self.tansu is not None:
            out["broker"] = self.tansu.pid
        if self.localstripe is not None:
            out["localstripe"] = self.localstripe.pid
        if self.standin is not None:
            out["stripe-standin"] = self.standin.pid
        return out

    def start(self) -> None:
        """Start every part and wait until each answers."""
        if self.postgres is not None:
            self.postgres.start()
        if self.tansu is not None:
            self.tansu.start()
        if self.localstripe is not None:
            self.localstripe.start()
        if self.standin is not None:
            self.standin.start()
            self.standin.wait_until_ready(
                lambda: answers_200(f"{self.standin_url}/_standin/stats"), timeout=30, what="stand-in answering"
            )

    def stop(self) -> None:
        """Stop what was started (services first is the caller's job), then remove the private directory."""
        if self.standin is not None:
            self.standin.stop()
        if self.localstripe is not None:
            self.localstripe.stop()
        if self.tansu is not None:
            self.tansu.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self._own_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def configure_standin(self, **settings: Any) -> dict[str, Any]:
        """Change the stand-in's latency, 429 rate or webhook between phases; returns its stats."""
        response = httpx.post(f"{self.standin_url}/_standin/config", json=settings, timeout=10.0)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def standin_stats(self) -> dict[str, Any]:
        """Requests, peak in-flight calls and PaymentIntents per order, as the stand-in counted them."""
        response = httpx.get(f"{self.standin_url}/_standin/stats", timeout=10.0)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats


@dataclass(frozen=True)
class Seeded:
    """What the load generator buys: a product with a huge stock and the tweet that sells it."""

    merchant_id: str
    api_key: str
    product_id: str
    tweet_id: str


async def _provision(database_admin_dsn: str, services: tuple[str, ...]) -> None:
    from tweetshop_platform.db import provision_service

    for name in services:
        await provision_service(database_admin_dsn, name, dev_password(name))


class ServiceStack:
    """The four services on ``infra``, in a database and topic namespace of their own, paying through ``stripe_url``."""

    def __init__(
        self,
        infra: BenchInfra,
        *,
        label: str,
        stripe_url: str,
        stripe_kind: str,
        extra_env: dict[str, str] | None = None,
        replicas: Mapping[str, int] | None = None,
    ) -> None:
        """``replicas``: how many processes of a service to run (1 each by default), as compose's ``--scale``
        would: the replicas after the first are named ``<service>-2``, ``-3``… with a port each and share its
        database, topics and consumer groups (Stripe's webhooks go to the first; ``urls``: where a client
        spreads its requests, as a load balancer would)."""
        if stripe_kind not in ("localstripe", "standin"):
            raise ValueError(f"unknown stripe_kind {stripe_kind!r}")
        self.infra = infra
        self.label = label
        self.stripe_url = stripe_url
        self.stripe_kind = stripe_kind
        self.extra_env = extra_env or {}
        token = uuid.uuid4().hex[:8]
        self.database = f"bench_{label}_{token}"
        self.namespace = f"bench{token}."
        counts = dict(replicas or {})
        unknown = set(counts) - set(SERVICE_NAMES)
        if unknown or any(n < 1 for n in counts.values()):
            raise ValueError(f"replicas: unknown services or counts below 1: {counts}")
        # Process name -> its service: "checkout", then "checkout-2", ...
        self.replica_of = {
            (name if i == 1 else f"{name}-{i}"): name
            for name in SERVICE_NAMES
            for i in range(1, counts.get(name, 1) + 1)
        }
        self.ports = {process: free_port() for process in self.replica_of}
        self.logs_dir = infra.logs_dir / label
        self.processes: dict[str, ManagedProcess] = {}
        self.seeded: Seeded | None = None

    def url(self, service: str) -> str:
        """Base URL of ``service`` (its first replica)."""
        return f"http://{LOCALHOST}:{self.ports[service]}"

    def urls(self, service: str) -> list[str]:
        """Base URLs of every replica of ``service``."""
        return [f"http://{LOCALHOST}:{self.ports[p]}" for p, of in self.replica_of.items() if of == service]

    def topic(self, logical: str) -> str:
        """The physical name of a contract topic in this stack."""
        return self.namespace + logical

    def pids(self) -> dict[str, int | None]:
        """Pids of the service processes (replicas by their own names)."""
        return {name: p.pid for name, p in self.processes.items()}

    @property
    def database_admin_dsn(self) -> str:
        """Superuser DSN to this stack's database."""
        return dsn_with_database(self.infra.admin_dsn, self.database)

    def start(self) -> None:
        """Create the database and roles, start the services side by side, wait until all are ready, seed."""
        asyncio.run(self._prepare_database())
        for name, service in self.replica_of.items():
            definition = BY_NAME[service]
            variables = service_env(
                definition,
                http_port=self.ports[name],
                database_url=service_dsn(self.database_admin_dsn, service, dev_password(service)),
                kafka_bootstrap=self.infra.kafka_bootstrap,
                kafka_idempotence=False,
                stripe_base_url=self.stripe_url,
                public_urls={other: self.url(other) for other in SERVICE_NAMES},
                topic_namespace=self.namespace,
                log_format="json",
                high_rate_limits=True,  # one address sends what many buyers and couriers would
            )
            self.processes[name] = ManagedProcess(
                f"{self.label}-{name}",
                [sys.executable, "-m", definition.module],
                log_path=self.logs_dir / f"{name}.log",
                # `make run`'s own defaults first (one partition per topic), as it starts the services.
                env={**MAKE_RUN_DEFAULTS, **os.environ, **variables, **self.extra_env},
            )
        self._register_webhook()
        for process in self.processes.values():
            process.start()
        for name, process in self.processes.items():
            process.wait_until_ready(
                functools.partial(self._is_ready, name),
                timeout=READY_TIMEOUT_S,
                what=f"GET {self.url(name)}/readyz == 200",
            )
        self.seeded = self._seed()

    def _is_ready(self, name: str) -> bool:
        # Our own child must hold the port: on a shared machine another process may answer there.
        return listens_on(self.processes[name].pid, self.ports[name]) and answers_200(f"{self.url(name)}/readyz")

    def stop(self) -> None:
        """Stop the four services at once (SIGTERM, SIGKILL after the grace period)."""
        stop_all(list(self.processes.values()), grace=10.0)
        if self.stripe_kind == "localstripe" and self.infra.localstripe is not None:
            # localstripe cannot delete a webhook; an empty event list silences it.
            with contextlib.suppress(RuntimeError, httpx.HTTPError):
                register_stripe_webhook(
                    self.infra.localstripe_url,
                    f"bench-{self.namespace}",
                    f"{self.url('checkout')}/webhooks/stripe",
                    DEV_STRIPE_WEBHOOK_SECRET,
                    events=[],
                )
        elif self.stripe_kind == "standin" and self.infra.standin is not None:
            with contextlib.suppress(httpx.HTTPError):
                self.infra.configure_standin(webhook_url="")

    async def _prepare_database(self) -> None:
        await create_database(self.infra.admin_dsn, self.database)
        await _provision(self.database_admin_dsn, SERVICE_NAMES)

    def _register_webhook(self) -> None:
        url = f"{self.url('checkout')}/webhooks/stripe"
        if self.stripe_kind == "localstripe":
            register_stripe_webhook(self.stripe_url, f"bench-{self.namespace}", url, DEV_STRIPE_WEBHOOK_SECRET)
        else:
            # Real Stripe sends webhooks too: the stand-in posts signed payment_intent.succeeded events.
            self.infra.configure_standin(webhook_url=url, webhook_secret=DEV_STRIPE_WEBHOOK_SECRET)

    def _seed(self) -> Seeded:
        handle = f"bench{uuid.uuid4().hex[:8]}"
        with httpx.Client(timeout=15.0) as client:
            merchant = client.post(f"{self.url('catalog')}/merchants", json={"handle": handle, "name": "Bench"})
            if merchant.status_code != 201:
                raise StartupError(f"creating the merchant failed: {merchant.status_code} {merchant.text[:300]}")
            m = merchant.json()
            auth = {"Authorization": f"Bearer {m['api_key']}"}
            product = client.post(
                f"{self.url('catalog')}/products",
                json={
                    "merchant_id": m["id"],
                    "title": "Benchmark mug",
                    "price_minor": PRODUCT_PRICE_MINOR,
                    "currency": "EUR",
                    "stock": PRODUCT_STOCK,
                },
                headers=auth,
            )
            if product.status_code != 201:
                raise StartupError(f"creating the product failed: {product.status_code} {product.text[:300]}")
            product_id = str(product.json()["id"])
            # feed learns merchants and products from catalog's topics: 503 with Retry-After for a moment.
            tweet = following_retry_after(
                lambda: client.post(
                    f"{self.url('feed')}/tweets",
                    json={"merchant_id": m["id"], "text": "Benchmark mug, buy now", "product_id": product_id},
                    headers=auth,
                ),
                timeout=60,
            )
            if tweet.status_code != 201:
                raise StartupError(f"posting the tweet failed: {tweet.status_code} {tweet.text[:300]}")
        return Seeded(str(m["id"]), str(m["api_key"]), product_id, str(tweet.json()["id"]))
