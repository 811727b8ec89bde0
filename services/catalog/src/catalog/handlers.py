"""Entry points for messages: translate one event into one service call."""

from __future__ import annotations

import asyncpg
from tweetshop_contracts import Envelope, OrderCancelled, OrderPaid, OrderPaymentFailed, OrderPlaced, OrderRefunded
from tweetshop_platform.consumer import handles

from . import service


# OrderBuyerErased (a deleted buyer's personal data) is nothing to the stock: skipped unread, without an inbox row.
@handles(OrderPlaced, OrderPaid, OrderPaymentFailed, OrderCancelled, OrderRefunded)
async def on_order_event(conn: asyncpg.Connection, event: Envelope) -> None:
    """checkout.orders.v1 → stock reservations."""
    match event:
        case OrderPlaced():
            await service.on_order_placed(conn, event)
        case OrderPaid():
            await service.on_order_paid(conn, event)
        case OrderPaymentFailed() | OrderCancelled():
            await service.on_order_ended_unpaid(conn, event)
        case OrderRefunded():
            await service.on_order_refunded(conn, event)
