"""Entry points for messages: translate one event into one service call."""

from __future__ import annotations

import asyncpg
from tweetshop_contracts import (
    Envelope,
    OrderCancelled,
    OrderPaid,
    OrderPaymentFailed,
    OrderPlaced,
    OrderRefunded,
    StockAllocationReturned,
)
from tweetshop_platform.consumer import Handler, handles, together

from . import repository, service


def order_events(allocation_units: int) -> Handler:
    """The handler of checkout.orders.v1, allocating ``allocation_units`` of a product to checkout at a time."""

    async def on_order_events(conn: asyncpg.Connection, events: list[Envelope]) -> None:
        """``on_order_event`` for a batch's events in turn, their reservations and products locked and read in one
        statement and written in one."""
        await on_order_events_with(conn, events, allocation_units)

    # OrderBuyerErased (a deleted buyer's personal data) is nothing to the stock: skipped unread, without an inbox row.
    @together(on_order_events)
    @handles(OrderPlaced, OrderPaid, OrderPaymentFailed, OrderCancelled, OrderRefunded)
    async def on_order_event(conn: asyncpg.Connection, event: Envelope) -> None:
        """checkout.orders.v1 → stock reservations."""
        await on_order_event_with(conn, event, allocation_units)

    return on_order_event


async def on_order_event_with(
    conn: asyncpg.Connection, event: Envelope, allocation_units: int, rows: repository.OrderRows | None = None
) -> None:
    match event:
        case OrderPlaced():
            await service.on_order_placed(conn, event, allocation_units, rows)
        case OrderPaid():
            await service.on_order_paid(conn, event, rows)
        case OrderPaymentFailed() | OrderCancelled():
            await service.on_order_ended_unpaid(conn, event, rows)
        case OrderRefunded():
            await service.on_order_refunded(conn, event, rows)


async def on_order_events_with(conn: asyncpg.Connection, events: list[Envelope], allocation_units: int) -> None:
    rows = repository.BatchRows(conn)
    await rows.lock_all(
        (event.order_id for event in events if isinstance(event, _ORDER_EVENTS)),
        (event.product_id for event in events if isinstance(event, OrderPlaced)),
    )
    for event in events:
        await on_order_event_with(conn, event, allocation_units, rows)
    await rows.write()


_ORDER_EVENTS = (OrderPlaced, OrderPaid, OrderPaymentFailed, OrderCancelled, OrderRefunded)


def allocation_events(allocation_units: int) -> Handler:
    """The handler of checkout.allocations.v1: allocated units back in catalog's hands (and allocated again)."""

    async def on_allocation_event(conn: asyncpg.Connection, event: Envelope) -> None:
        """checkout.allocations.v1 → allocated units back in catalog's hands."""
        match event:
            case StockAllocationReturned():
                await service.on_allocation_returned(conn, event, allocation_units)

    return on_allocation_event
