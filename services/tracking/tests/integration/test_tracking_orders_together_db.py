"""tracking's batch form of its order handler against real Postgres: a run of OrderPaid in one statement leaves the
shipments and the outbox exactly as the handler applied to each event in turn."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from tracking import handlers
from tweetshop_contracts import Destination, Envelope, OrderCancelled, OrderPaid
from tweetshop_platform import outbox

PRODUCT = uuid.uuid4()


def paid(order_id: uuid.UUID, city: str = "Lyon") -> OrderPaid:
    return OrderPaid(
        producer="checkout",
        correlation_id=f"corr-{order_id}",
        order_id=order_id,
        product_id=PRODUCT,
        quantity=1,
        payment_intent_id="pi_1",
        amount_minor=1200,
        currency="EUR",
        destination=Destination(city=city, country="FR", lat=45.76, lon=4.84),
    )


async def applied(
    pool: asyncpg.Pool, order_ids: list[uuid.UUID], apply: Callable[[asyncpg.Connection], Awaitable[None]]
) -> tuple[Any, ...]:
    """The shipments of ``order_ids`` and the outbox rows ``apply`` leaves, read in its transaction, rolled back."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            last = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
            async with outbox.batched(conn):  # as the reliable subscriber runs its handler
                await apply(conn)
            shipments = await conn.fetch(
                """SELECT order_id, status, dest_city, correlation_id, buyer_access_hash IS NULL AS no_access
                   FROM shipments WHERE order_id = ANY($1) ORDER BY order_id""",
                order_ids,
            )
            published = await conn.fetch(
                """SELECT event_type, correlation_id, convert_from(payload, 'UTF8')::jsonb ->> 'order_id' AS order_id
                   FROM outbox WHERE id > $1 ORDER BY id""",
                last,
            )
        finally:
            await tx.rollback()
    return [tuple(r) for r in shipments], [tuple(r) for r in published]


async def test_paid_orders_applied_together_get_what_they_get_one_by_one(tracking_pool: asyncpg.Pool) -> None:
    """Three paid orders, one paid twice in the run (one shipment), one that has its shipment already, and a
    cancellation between two runs of OrderPaid."""
    first, second, shipped_before, cancelled = (uuid.uuid4() for _ in range(4))
    async with tracking_pool.acquire() as conn, conn.transaction(), outbox.batched(conn):
        await handlers.on_order_event(conn, paid(shipped_before))
    events: list[Envelope] = [
        paid(first),
        paid(shipped_before),
        paid(first, city="Paris"),
        OrderCancelled(
            producer="checkout", correlation_id="c", order_id=cancelled, product_id=PRODUCT, quantity=1, reason="gone"
        ),
        paid(second),
        paid(cancelled),
    ]
    ids = [first, second, shipped_before, cancelled]

    async def one_by_one(conn: asyncpg.Connection) -> None:
        for event in events:
            await handlers.on_order_event(conn, event)

    async def together(conn: asyncpg.Connection) -> None:
        await handlers.on_order_events(conn, events)

    alone = await applied(tracking_pool, ids, one_by_one)
    assert await applied(tracking_pool, ids, together) == alone
    shipments, published = alone
    assert {row[0]: row[2] for row in shipments} == {
        first: "Lyon",
        second: "Lyon",
        shipped_before: "Lyon",
        cancelled: "Lyon",
    }
    assert [(row[0], row[2]) for row in published] == [
        ("ShipmentCreated", str(first)),
        ("ShipmentCreated", str(second)),
        ("ShipmentCreated", str(cancelled)),
    ]
