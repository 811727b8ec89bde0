"""Every service's read models of catalog's topics follow the same two rules (``tweetshop_platform.read_models``).

- catalog.products.v1: the newest version wins, whatever order the states arrive in, and a state read twice
  changes nothing the second time;
- catalog.merchants.v1: a key rotation wins over the registration's key, whichever arrives first; a rotation
  read first is kept (never parked), and its registration then fills in what else it carries (feed's handle
  and name).

Each read model is driven through its service's own handler (the function its reliable subscriber calls, as
listed in ``tweetshop_cli.groups.READ_MODELS``), in its own schema with its migrations applied, on a real
Postgres. Every reliable consumer of these two topics must have its read model listed, so a new one is held to
the same rules.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from tweetshop_cli.groups import READ_MODELS, ReadModel
from tweetshop_contracts import (
    Envelope,
    MerchantApiKeyRotated,
    MerchantRegistered,
    ProductListed,
    ProductUpdated,
    topics,
    topology,
)
from tweetshop_devstack.pytest_plugin import ScratchDatabase
from tweetshop_platform import db
from tweetshop_platform.auth import hash_secret

RULED_TOPICS = (topics.CATALOG_PRODUCTS, topics.CATALOG_MERCHANTS)
PRODUCT_MODELS = sorted(name for name, m in READ_MODELS.items() if m.topic == topics.CATALOG_PRODUCTS)
MERCHANT_MODELS = sorted(name for name, m in READ_MODELS.items() if m.topic == topics.CATALOG_MERCHANTS)


def test_every_reliable_consumer_of_catalogs_entity_topics_has_its_read_model_held_to_the_rules() -> None:
    for topic in RULED_TOPICS:
        consumers = {c.service for c in topology.topic_spec(topic).consumers if not c.fan_out}
        listed = {m.service for m in READ_MODELS.values() if m.topic == topic}
        assert consumers == listed, f"{topic}: consumers {sorted(consumers)}, read models of {sorted(listed)}"
    assert PRODUCT_MODELS and MERCHANT_MODELS


@dataclass
class Model:
    """One service's read model in a fresh schema of its own, and its handler."""

    read_model: ReadModel
    pool: asyncpg.Pool
    handler: Callable[[asyncpg.Connection, Envelope], Awaitable[None]]

    async def handle(self, *events: Envelope) -> None:
        """Each event in its own transaction, as the reliable subscriber does."""
        for event in events:
            async with self.pool.acquire() as conn, conn.transaction():
                await self.handler(conn, event)

    async def row(self, table: str, key: uuid.UUID) -> dict[str, Any] | None:
        found = await self.pool.fetchrow(f"SELECT * FROM {table} WHERE id = $1", key)
        return dict(found.items()) if found else None

    async def columns(self, table: str) -> set[str]:
        rows = await self.pool.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
            self.read_model.service,
            table,
        )
        return {r["column_name"] for r in rows}


@pytest_asyncio.fixture
async def model(request: pytest.FixtureRequest, database: ScratchDatabase) -> AsyncIterator[Model]:
    read_model = READ_MODELS[request.param]
    service = read_model.service
    dsn = await database.provision(service)
    pool = await db.create_pool(dsn, service)
    try:
        own = db.load_migrations(service, resources.files(service) / "migrations")
        await db.apply_migrations(pool, service, db.platform_migrations() + own)
        module, function = read_model.handler.split(":")
        yield Model(read_model, pool, getattr(importlib.import_module(module), function))
    finally:
        await pool.close()


# --- catalog.products.v1: the newest version wins ----------------------------------------------------------


def product_state(product_id: uuid.UUID, version: int, *, price_minor: int) -> Envelope:
    """The product's full state at ``version`` (listed at 1, updated after), as catalog publishes it."""
    event_type = ProductListed if version == 1 else ProductUpdated
    return event_type(
        producer="catalog",
        correlation_id="read-model-rules",
        product_id=product_id,
        merchant_id=uuid.UUID(int=7),
        title=f"Mug v{version}",
        price_minor=price_minor,
        currency="EUR",
        stock_available=version,
        version=version,
    )


async def product(model: Model, product_id: uuid.UUID) -> tuple[int, int, str]:
    row = await model.row("products", product_id)
    assert row is not None
    return row["version"], row["price_minor"], row["title"]


@pytest.mark.parametrize("model", PRODUCT_MODELS, indirect=True)
async def test_a_newer_version_then_an_older_one_keeps_the_newer(model: Model) -> None:
    product_id = uuid.uuid4()

    await model.handle(product_state(product_id, 3, price_minor=300), product_state(product_id, 2, price_minor=200))

    assert await product(model, product_id) == (3, 300, "Mug v3")


@pytest.mark.parametrize("model", PRODUCT_MODELS, indirect=True)
async def test_an_older_version_then_a_newer_one_keeps_the_newer(model: Model) -> None:
    product_id = uuid.uuid4()

    await model.handle(product_state(product_id, 1, price_minor=100), product_state(product_id, 2, price_minor=200))

    assert await product(model, product_id) == (2, 200, "Mug v2")


@pytest.mark.parametrize("model", PRODUCT_MODELS, indirect=True)
async def test_the_same_version_twice_changes_nothing_the_second_time(model: Model) -> None:
    product_id = uuid.uuid4()
    await model.handle(product_state(product_id, 2, price_minor=200))
    first = await model.row("products", product_id)

    # Another event id (the inbox cannot tell), the same version: the rule itself must not write again.
    await model.handle(product_state(product_id, 2, price_minor=999))

    assert await model.row("products", product_id) == first
    assert await product(model, product_id) == (2, 200, "Mug v2")


# --- catalog.merchants.v1: a rotation's key wins, whichever arrives first -----------------------------------


def registered(merchant_id: uuid.UUID, key: str) -> MerchantRegistered:
    return MerchantRegistered(
        producer="catalog",
        correlation_id="read-model-rules",
        merchant_id=merchant_id,
        handle="fancy",
        name="Fancy Inc.",
        api_key_sha256=hash_secret(key),
    )


def rotated(merchant_id: uuid.UUID, key: str) -> MerchantApiKeyRotated:
    return MerchantApiKeyRotated(
        producer="catalog", correlation_id="read-model-rules", merchant_id=merchant_id, api_key_sha256=hash_secret(key)
    )


async def merchant(model: Model, merchant_id: uuid.UUID) -> dict[str, Any]:
    """The merchant's key hash, and whichever of handle and name the service keeps."""
    row = await model.row("merchants", merchant_id)
    assert row is not None
    kept = {"api_key_hash"} | ({"handle", "name"} & await model.columns("merchants"))
    return {c: row[c] for c in sorted(kept)}


def expected(model_columns: set[str], key: str) -> dict[str, Any]:
    details = {"handle": "fancy", "name": "Fancy Inc."}
    return {"api_key_hash": hash_secret(key)} | {c: v for c, v in details.items() if c in model_columns}


@pytest.mark.parametrize("model", MERCHANT_MODELS, indirect=True)
async def test_a_rotation_before_its_registration_keeps_the_rotated_key_and_takes_the_handle_and_name(
    model: Model,
) -> None:
    merchant_id = uuid.uuid4()

    await model.handle(rotated(merchant_id, "tsk_second"))  # kept, not parked: no exception
    await model.handle(registered(merchant_id, "tsk_first"))

    assert await merchant(model, merchant_id) == expected(await model.columns("merchants"), "tsk_second")


@pytest.mark.parametrize("model", MERCHANT_MODELS, indirect=True)
async def test_a_registration_then_a_rotation_keeps_the_rotated_key_even_when_the_registration_is_replayed(
    model: Model,
) -> None:
    merchant_id = uuid.uuid4()

    await model.handle(registered(merchant_id, "tsk_first"))
    assert await merchant(model, merchant_id) == expected(await model.columns("merchants"), "tsk_first")
    await model.handle(rotated(merchant_id, "tsk_second"), registered(merchant_id, "tsk_first"))

    assert await merchant(model, merchant_id) == expected(await model.columns("merchants"), "tsk_second")
