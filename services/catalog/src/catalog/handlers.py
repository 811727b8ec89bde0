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
from tweetshop_platform.consumer import Handler, handles

from . import service


def order_events(allocation_units: int) -> Handler:
    """The handler of checkout.orders.v1, allocating ``allocation_units`` of a product to checkout at a time."""

    # OrderBuyerErased (a deleted buyer's personal data) is nothing to the stock: skipped unread, without an inbox row.
    @handles(OrderPlaced, OrderPaid, OrderPaymentFailed, OrderCancelled, OrderRefunded)
    async def on_order_event(conn: asyncpg.Connection, event: Envelope) -> None:
        """checkout.orders.v1 → stock reservations."""
        await on_order_event_with(conn, event, allocation_units)

    return on_order_event


async def on_order_event_with(conn: asyncpg.Connection, event: Envelope, allocation_units: int) -> None:
    match event:
        case OrderPlaced():
            await service.on_order_placed(conn, event, allocation_units)
        case OrderPaid():
            await service.on_order_paid(conn, event)
        case OrderPaymentFailed() | OrderCancelled():
            await service.on_order_ended_unpaid(conn, event)
        case OrderRefunded():
            await service.on_order_refunded(conn, event)


def allocation_events(allocation_units: int) -> Handler:
    """The handler of checkout.allocations.v1: allocated units back in catalog's hands (and allocated again)."""

    async def on_allocation_event(conn: asyncpg.Connection, event: Envelope) -> None:
        """checkout.allocations.v1 → allocated units back in catalog's hands."""
        match event:
            case StockAllocationReturned():
                await service.on_allocation_returned(conn, event, allocation_units)

    return on_allocation_event
