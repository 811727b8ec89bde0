"""A consumer batch of orders in one transaction on a real Postgres: one answer per order, one ProductUpdated
per product (its newest state), every outbox row written together at the end, nothing of a failed batch kept."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from importlib import resources

import asyncpg
import pytest
import pytest_asyncio
from catalog import handlers, repository
from catalog.domain import Product
from faststream.kafka import KafkaBroker
from tweetshop_contracts import Envelope, OrderPaymentFailed, OrderPlaced, ProductUpdated, decode_event, topics
from tweetshop_devstack.pytest_plugin import ScratchDatabase
from tweetshop_platform import db, outbox
from tweetshop_platform.consumer import ReliableSubscriber
from tweetshop_platform.kafka import TopicNames


@pytest_asyncio.fixture(loop_scope="session")
async def catalog_pool(database: ScratchDatabase) -> AsyncIterator[asyncpg.Pool]:
    """catalog's schema, migrated, in a fresh database."""
    dsn = await database.provision("catalog")
    pool = await db.create_pool(dsn, "catalog", min_size=1, max_size=4)
    try:
        migrations = db.platform_migrations() + db.load_migrations("catalog", resources.files("catalog") / "migrations")
        await db.apply_migrations(pool, "catalog", migrations)
        yield pool
    finally:
        await pool.close()


def subscriber(pool: asyncpg.Pool) -> ReliableSubscriber:
    """catalog's orders group as the runtime builds it (its broker is never started: handle_batch is called)."""
    return ReliableSubscriber(
        broker=KafkaBroker(),
        pool=pool,
        topics=TopicNames(""),
        topic=topics.CHECKOUT_ORDERS,
        group_id=f"catalog.orders.{uuid.uuid4().hex[:8]}",
        handler=handlers.order_events(0),
    )


async def a_product(pool: asyncpg.Pool, stock: int) -> Product:
    merchant_id = uuid.uuid4()
    product = Product(
        id=uuid.uuid4(),
        merchant_id=merchant_id,
        title="Mug",
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
        await repository.insert_merchant(conn, merchant_id, f"m{merchant_id.hex[:8]}", "Fancy", uuid.uuid4().hex)
        await repository.insert_product(conn, product)
    return product


def placed(product: Product, quantity: int = 1) -> OrderPlaced:
    return OrderPlaced(
        producer="test",
        correlation_id=f"corr-{uuid.uuid4()}",
        order_id=uuid.uuid4(),
        product_id=product.id,
        quantity=quantity,
        tweet_id=uuid.uuid4(),
        buyer_id="buyer-1",
        amount_minor=2500 * quantity,
        currency="EUR",
        unit_price_minor=2500,
    )


async def outbox_events(pool: asyncpg.Pool, since: int) -> list[tuple[int, Envelope]]:
    """The events the outbox holds after row ``since``, with their row ids, in order."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, topic, payload, more_payloads FROM outbox WHERE id > $1 ORDER BY id", since)
    return [
        (r["id"], decode_event(r["topic"], bytes(p))) for r in rows for p in (r["payload"], *(r["more_payloads"] or ()))
    ]


async def last_row(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox"))


async def test_a_batch_publishes_each_answer_and_one_newest_product_state_per_product(
    catalog_pool: asyncpg.Pool,
) -> None:
    mug, cup = await a_product(catalog_pool, stock=10), await a_product(catalog_pool, stock=1)
    orders = [placed(mug), placed(cup), placed(mug, 2), placed(cup), placed(mug)]
    released = OrderPaymentFailed(
        producer="test",
        correlation_id=orders[2].correlation_id,
        order_id=orders[2].order_id,
        product_id=mug.id,
        quantity=2,
        reason="card declined",
    )
    before = await last_row(catalog_pool)

    await subscriber(catalog_pool).handle_batch([*orders, released])

    events = await outbox_events(catalog_pool, before)
    answers = [(type(e).__name__, e.order_id) for _, e in events if e.topic() == topics.CATALOG_RESERVATIONS]  # type: ignore[attr-defined]
    assert answers == [
        ("StockReserved", orders[0].order_id),
        ("StockReserved", orders[1].order_id),
        ("StockReserved", orders[2].order_id),
        ("StockRejected", orders[3].order_id),  # the cup's only unit went to orders[1]
        ("StockReserved", orders[4].order_id),
        ("StockReleased", orders[2].order_id),
    ]
    states = [e for _, e in events if isinstance(e, ProductUpdated)]
    assert [(s.product_id, s.stock_available, s.version) for s in states] == [
        (cup.id, 0, 2),  # one reservation of the cup
        (mug.id, 10 - 1 - 2 - 1 + 2, 5),  # three reservations and a release of the mug: its state after the last
    ]
    async with catalog_pool.acquire() as conn:
        for product in (mug, cup):
            stored = await repository.get_product(conn, product.id)
            state = next(s for s in states if s.product_id == product.id)
            assert stored is not None and (stored.stock_available, stored.version) == (
                state.stock_available,
                state.version,
            )
    assert len({row_id for row_id, _ in events}) == len(events), "one row per event, written in one go"


async def test_a_failed_batch_leaves_no_outbox_row_and_its_orders_are_answered_one_by_one(
    catalog_pool: asyncpg.Pool,
) -> None:
    mug = await a_product(catalog_pool, stock=5)
    good = placed(mug)
    too_big = placed(mug).model_copy(update={"quantity": 2**31})  # an INT column cannot take it
    before = await last_row(catalog_pool)
    sub = subscriber(catalog_pool)

    with pytest.raises(asyncpg.DataError):
        await sub.handle_batch([good, too_big])
    assert await outbox_events(catalog_pool, before) == [], "rolled back: nothing of the batch is kept"

    assert await sub.handle_batch([good]) == [True]
    events = [e for _, e in await outbox_events(catalog_pool, before)]
    assert [type(e).__name__ for e in events] == ["StockReserved", "ProductUpdated"]
    assert outbox._BATCH.get() is None, "the batch's scope ended with it"
