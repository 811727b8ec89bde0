"""Entry points for messages: translate one event into one service call."""

from __future__ import annotations

import asyncpg
from tweetshop_contracts import Envelope, OrderBuyerErased, OrderCancelled, OrderPaid, OrderRefunded
from tweetshop_platform.consumer import handles, in_runs, together

from . import service


async def on_order_events(conn: asyncpg.Connection, events: list[Envelope]) -> None:
    """``on_order_event`` for a batch's events in turn: each run of OrderPaid in one statement."""
    await in_runs(conn, events, OrderPaid, service.on_orders_paid, on_order_event)


@together(on_order_events)
@handles(OrderPaid, OrderRefunded, OrderCancelled, OrderBuyerErased)
async def on_order_event(conn: asyncpg.Connection, event: Envelope) -> None:
    """checkout.orders.v1 → shipments (other order events are not tracking's business: skipped unread)."""
    match event:
        case OrderPaid():
            await service.on_order_paid(conn, event)
        case OrderRefunded() | OrderCancelled():
            await service.on_order_withdrawn(conn, event)
        case OrderBuyerErased():
            await service.on_buyer_erased(conn, event)
