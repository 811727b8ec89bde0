"""Helpers for the operations tests: the `tweetshop` command, Prometheus scrapes, polling, catalog data."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tweetshop_contracts import OrderPlaced
from tweetshop_devstack.kafka_probe import publish_events
from tweetshop_devstack.testing import eventually, run_sync
from tweetshop_platform.settings import DEV_OPERATOR_KEY

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class CliResult:
    """What one `tweetshop` run printed and returned."""

    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


class Cli:
    """Runs `python -m tweetshop_cli` as an operator would, with the test's broker, database and namespace."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> CliResult:
        """Run it to the end; a hung command fails the test after ``timeout`` seconds."""
        done = subprocess.run(
            [sys.executable, "-m", "tweetshop_cli", *args],
            env={**os.environ, **self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start it in the background (the caller waits for it with ``communicate``)."""
        return subprocess.Popen(
            [sys.executable, "-m", "tweetshop_cli", *args],
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )


def scrape(base_url: str) -> Samples:
    """Every sample of a service's /metrics, keyed by (name, labels)."""
    response = httpx.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@dataclass
class Shop:
    """A merchant and one product in a running catalog."""

    catalog_url: str
    merchant_id: str
    api_key: str
    product_id: str

    def product(self) -> dict[str, Any]:
        """GET /products/{id}."""
        response = httpx.get(f"{self.catalog_url}/products/{self.product_id}", timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def order(self, quantity: int = 1) -> OrderPlaced:
        """An OrderPlaced for this product, as checkout would publish it."""
        return OrderPlaced(
            producer="checkout",
            correlation_id=f"ops-{uuid.uuid4().hex[:12]}",
            order_id=uuid.uuid4(),
            product_id=uuid.UUID(self.product_id),
            quantity=quantity,
            tweet_id=uuid.uuid4(),
            buyer_id="buyer-ops",
            amount_minor=1000 * quantity,
            currency="EUR",
            unit_price_minor=1000,
        )


def open_shop(catalog_url: str, stock: int = 100) -> Shop:
    """Register a merchant and list one product with ``stock`` units."""
    merchant = httpx.post(
        f"{catalog_url}/merchants", json={"handle": f"ops{uuid.uuid4().hex[:8]}", "name": "Ops"}, timeout=10
    )
    assert merchant.status_code == 201, merchant.text
    m = merchant.json()
    product = httpx.post(
        f"{catalog_url}/products",
        json={"merchant_id": m["id"], "title": "Ops mug", "price_minor": 1000, "currency": "EUR", "stock": stock},
        headers={"Authorization": f"Bearer {m['api_key']}"},
        timeout=10,
    )
    assert product.status_code == 201, product.text
    return Shop(catalog_url, m["id"], m["api_key"], product.json()["id"])


class Ops:
    """What the operations tests share: the CLI, the broker and the namespace of this test's services, and helpers
    (test modules cannot import each other or this file)."""

    eventually = staticmethod(eventually)
    scrape = staticmethod(scrape)
    value = staticmethod(value)
    open_shop = staticmethod(open_shop)

    def __init__(self, cli: Cli, bootstrap: str, namespace: str) -> None:
        self.cli = cli
        self.bootstrap = bootstrap
        self.namespace = namespace

    def confirm_operator_via(self, service_url: str) -> None:
        """Operator commands confirm their key with this running service."""
        self.cli.env["TWEETSHOP_OPERATOR_CHECK_URL"] = service_url

    def publish(self, *events: Any) -> None:
        """Publish contract events into this test's namespace."""
        run_sync(publish_events(self.bootstrap, self.namespace, *events))


@pytest.fixture
def ops(service_process: Any, kafka_bootstrap: str, database: Any) -> Iterator[Ops]:
    """The CLI wired to this test's broker, database (as superuser) and topic namespace."""
    env = {
        "TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TWEETSHOP_TOPIC_NAMESPACE": service_process.topic_namespace,
        "TWEETSHOP_DATABASE_URL": database.admin_dsn,
        # The services of these tests run with the development operator key; each test that replays or
        # dismisses names one of its running services as TWEETSHOP_OPERATOR_CHECK_URL (Ops.confirm_operator_via).
        "TWEETSHOP_OPERATOR_KEY": DEV_OPERATOR_KEY,
    }
    yield Ops(Cli(env), kafka_bootstrap, service_process.topic_namespace)


@pytest.fixture
def make_cli() -> Callable[[dict[str, str]], Cli]:
    """Make a `tweetshop` runner with the given TWEETSHOP_* environment (no database or namespace needed)."""
    return Cli
