"""The last unit in stock, wanted by many orders at the same moment: exactly one gets it, stock never goes negative.

Two levels: the reservation use case in concurrent transactions on a real Postgres (the row lock is what keeps
them apart), then two catalog replicas in one consumer group reading the orders from the real broker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import asyncpg
import httpx
import pytest_asyncio
from catalog import repository, service
from catalog.domain import Product
from tweetshop_contracts import OrderPlaced, StockRejected, StockReserved, topics
from tweetshop_devstack.kafka_probe import events_of, publish_events, read_topic
from tweetshop_devstack.pytest_plugin import ScratchDatabase
from tweetshop_platform import db

BUYERS = 16


def order_for(product_id: uuid.UUID, price_minor: int = 2500) -> OrderPlaced:
    """One unit of the product, for a buyer of its own."""
    return OrderPlaced(
        producer="test",
        correlation_id=f"corr-{uuid.uuid4()}",
        order_id=uuid.uuid4(),
        product_id=product_id,
        quantity=1,
        tweet_id=uuid.uuid4(),
        buyer_id=f"buyer-{uuid.uuid4().hex[:8]}",
        amount_minor=price_minor,
        currency="EUR",
        unit_price_minor=price_minor,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def catalog_pool(database: ScratchDatabase) -> AsyncIterator[asyncpg.Pool]:
    """catalog's schema, migrated, in a fresh database; one connection per concurrent buyer."""
    dsn = await database.provision("catalog")
    pool = await db.create_pool(dsn, "catalog", min_size=1, max_size=BUYERS + 2)
    try:
        migrations = db.platform_migrations() + db.load_migrations("catalog", resources.files("catalog") / "migrations")
        await db.apply_migrations(pool, "catalog", migrations)
        yield pool
    finally:
        await pool.close()


async def a_product_with_stock(pool: asyncpg.Pool, stock: int) -> Product:
    merchant_id = uuid.uuid4()
    product = Product(
        id=uuid.uuid4(),
        merchant_id=merchant_id,
        title="The last mug",
        description="",
        image_url=None,
        price_minor=2500,
        currency="EUR",
        stock_available=stock,
        stock_reserved=0,
        stock_sold=0,
        status="active",
        version=1,
    )
    async with pool.acquire() as conn:
        handle, key_hash = f"m{merchant_id.hex[:8]}", f"hash-{uuid.uuid4().hex}"
        await repository.insert_merchant(conn, merchant_id, handle, "Fancy", key_hash)
        await repository.insert_product(conn, product)
    return product


async def test_concurrent_orders_for_the_last_unit_reserve_it_exactly_once(catalog_pool: asyncpg.Pool) -> None:
    product = await a_product_with_stock(catalog_pool, stock=1)
    orders = [order_for(product.id) for _ in range(BUYERS)]
    # Every transaction is open before any of them reads the product: without the row lock all of them
    # would read "1 left" and reserve it.
    everyone_in = asyncio.Barrier(BUYERS)

    async def place(event: OrderPlaced) -> None:
        async with catalog_pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1")
            await everyone_in.wait()
            await service.on_order_placed(conn, event)

    await asyncio.wait_for(asyncio.gather(*(place(o) for o in orders)), timeout=60)

    async with catalog_pool.acquire() as conn:
        answers = Counter(
            r["event_type"]
            for r in await conn.fetch("SELECT event_type FROM outbox WHERE topic = $1", topics.CATALOG_RESERVATIONS)
        )
        reservations = Counter(r["status"] for r in await conn.fetch("SELECT status FROM reservations"))
        stock = await repository.get_product(conn, product.id)
    assert answers == {"StockReserved": 1, "StockRejected": BUYERS - 1}
    assert reservations == {"reserved": 1, "rejected": BUYERS - 1}
    assert stock is not None
    assert (stock.stock_available, stock.stock_reserved, stock.stock_sold) == (0, 1, 0)


async def test_two_catalog_replicas_reserve_the_last_unit_for_one_order_only(
    service_process: Any, kafka_bootstrap: str
) -> None:
    # Catalog deciding every reservation: no unit allocated to checkout (that race is checkout's, in one statement).
    replicas = service_process.start_many(["catalog", "catalog"], {"TWEETSHOP_ALLOCATION_UNITS": "0"})
    catalog = replicas[0].base_url
    merchant = httpx.post(f"{catalog}/merchants", json={"handle": f"m{uuid.uuid4().hex[:8]}", "name": "Fancy"}).json()
    created = httpx.post(
        f"{catalog}/products",
        json={"merchant_id": merchant["id"], "title": "Last mug", "price_minor": 2500, "currency": "EUR", "stock": 1},
        headers={"Authorization": f"Bearer {merchant['api_key']}"},
    )
    assert created.status_code == 201, created.text
    product_id = uuid.UUID(created.json()["id"])
    orders = [order_for(product_id) for _ in range(10)]  # distinct order ids: spread over partitions and replicas

    await publish_events(kafka_bootstrap, service_process.topic_namespace, *orders)
    records = await read_topic(
        kafka_bootstrap,
        service_process.topic_namespace + topics.CATALOG_RESERVATIONS,
        until=lambda rs: len(rs) >= len(orders),
        timeout=60,
    )

    answers = events_of(records, topics.CATALOG_RESERVATIONS)
    assert sorted(type(e).__name__ for e in answers) == sorted(
        [StockReserved.__name__] + [StockRejected.__name__] * (len(orders) - 1)
    )
    assert {e.order_id for e in answers} == {o.order_id for o in orders}  # type: ignore[attr-defined]
    stock = httpx.get(f"{replicas[1].base_url}/products/{product_id}").json()
    assert (stock["stock_available"], stock["stock_reserved"]) == (0, 1)
