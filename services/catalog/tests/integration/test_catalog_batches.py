"""A consumer batch of orders in one transaction on a real Postgres: one answer per order, one ProductUpdated
per product (its newest state), every outbox row written together at the end, nothing of a failed batch kept."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from catalog import handlers, repository
from catalog.domain import Product
from faststream.kafka import KafkaBroker
from pydantic import ValidationError
from tweetshop_contracts import (
    Destination,
    Envelope,
    OrderPaid,
    OrderPaymentFailed,
    OrderPlaced,
    OrderRefunded,
    ProductUpdated,
    decode_event,
    topics,
)
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

    # The batch form meets the value first in the StockRejected it builds, the handler alone in the database: both
    # are parked at once (consumer.PERMANENT_ERRORS).
    with pytest.raises((asyncpg.DataError, ValidationError)):
        await sub.handle_batch([good, too_big])
    assert await outbox_events(catalog_pool, before) == [], "rolled back: nothing of the batch is kept"

    assert await sub.handle_batch([good]) == [True]
    events = [e for _, e in await outbox_events(catalog_pool, before)]
    assert [type(e).__name__ for e in events] == ["StockReserved", "ProductUpdated"]
    assert outbox._BATCH.get() is None, "the batch's scope ended with it"


async def _applied(
    pool: asyncpg.Pool, product_ids: list[uuid.UUID], apply: Callable[[asyncpg.Connection], Awaitable[None]]
) -> tuple[Any, ...]:
    """The products, their reservations and the outbox rows ``apply`` leaves, read in its transaction, which is then
    rolled back (each way of applying starts from the same rows)."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            since = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox"))
            async with outbox.batched(conn):  # as the reliable subscriber runs its handler
                await apply(conn)
            products = await conn.fetch(
                f"SELECT {repository._PRODUCT_COLUMNS} FROM products WHERE id = ANY($1) ORDER BY id", product_ids
            )
            reservations = await conn.fetch(
                """SELECT order_id, product_id, quantity, status, reason FROM reservations
                   WHERE product_id = ANY($1) ORDER BY order_id""",
                product_ids,
            )
            rows = await conn.fetch("SELECT topic, payload, more_payloads FROM outbox WHERE id > $1 ORDER BY id", since)
        finally:
            await tx.rollback()
    published = [
        decode_event(r["topic"], bytes(p)).model_dump(exclude={"event_id", "occurred_at"})
        for r in rows
        for p in (r["payload"], *(r["more_payloads"] or ()))
    ]
    return [tuple(r) for r in products], [tuple(r) for r in reservations], published


async def test_a_batch_applied_together_leaves_what_its_events_leave_one_by_one(catalog_pool: asyncpg.Pool) -> None:
    """The orders group's batch form (its reservations and products locked and read in one statement and written in
    one) against the handler applied to each event in turn, from the same rows: orders from the free stock, from
    checkout's allocation (and one naming an allocation that cannot hold it), an order placed twice, one placed and
    paid in the same batch, a rejection for want of stock, an unknown product, a payment failure, a refund with the
    goods back, a payment for an order catalog never saw; with allocations on, so the allocation is topped up."""
    mug, cup = await a_product(catalog_pool, stock=10), await a_product(catalog_pool, stock=3)
    async with catalog_pool.acquire() as conn:
        for product in (mug, cup):  # checkout holds 2 units of each under generation 1
            await conn.execute(
                "UPDATE products SET stock_allocated = 2, allocation_generation = 1 WHERE id = $1", product.id
            )
    earlier, refunded = placed(mug), placed(mug)

    def ended(order: OrderPlaced, kind: type[OrderPaid | OrderPaymentFailed]) -> Envelope:
        common = {"producer": "test", "correlation_id": order.correlation_id, "order_id": order.order_id}
        common |= {"product_id": order.product_id, "quantity": order.quantity}
        if kind is OrderPaid:
            return OrderPaid(
                **common,
                amount_minor=order.amount_minor,
                currency="EUR",
                payment_intent_id="pi_1",
                destination=Destination(city="Lyon", country="FR", lat=45.76, lon=4.84),
            )
        return OrderPaymentFailed(**common, reason="card declined")

    async with catalog_pool.acquire() as conn, conn.transaction(), outbox.batched(conn):
        for before in (earlier, refunded, ended(refunded, OrderPaid)):
            await handlers.on_order_event_with(conn, before, 0)
    from_allocation = placed(cup).model_copy(update={"allocation_generation": 1})
    forged = placed(mug).model_copy(update={"allocation_generation": 7})
    placed_and_paid = placed(mug, 2)
    nowhere = placed(mug).model_copy(update={"product_id": uuid.uuid4()})
    events: list[Envelope] = [
        placed(mug),
        from_allocation,
        placed(cup),
        placed(cup),  # the cup's free unit went to the order before: rejected
        placed_and_paid,
        forged,
        ended(placed_and_paid, OrderPaid),
        from_allocation,
        nowhere,
        ended(earlier, OrderPaymentFailed),
        OrderRefunded(
            producer="test",
            correlation_id="c",
            order_id=refunded.order_id,
            product_id=mug.id,
            quantity=1,
            amount_minor=2500,
            refunded_total_minor=2500,
            currency="EUR",
            full=True,
            restock=True,
        ),
        ended(placed(mug), OrderPaid),  # never placed here
    ]
    ids = [mug.id, cup.id]

    async def one_by_one(conn: asyncpg.Connection) -> None:
        for event in events:
            await handlers.on_order_event_with(conn, event, 4)

    async def together(conn: asyncpg.Connection) -> None:
        await handlers.on_order_events_with(conn, events, 4)

    alone = await _applied(catalog_pool, ids, one_by_one)
    assert await _applied(catalog_pool, ids, together) == alone
    _, reservations, published = alone
    assert {(r[0], r[3]) for r in reservations} >= {
        (placed_and_paid.order_id, "committed"),
        (from_allocation.order_id, "reserved"),
        (earlier.order_id, "released"),
        (refunded.order_id, "returned"),
    }
    kinds = [e["event_type"] for e in published]
    # Every kind of answer was given: reserved, rejected (the cup's free stock ran out, the unknown product),
    # released, an allocation topped up, and the products' newest states.
    assert {"StockReserved", "StockRejected", "StockReleased", "StockAllocated", "ProductUpdated"} <= set(kinds)
