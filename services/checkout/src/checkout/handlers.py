"""Entry points for messages: translate one event into one use-case call."""

from __future__ import annotations

import asyncpg
from tweetshop_contracts import (
    BuyableTweetPosted,
    Envelope,
    MerchantApiKeyRotated,
    MerchantRegistered,
    ProductListed,
    ProductUpdated,
    ShipmentCreated,
    ShipmentStatusChanged,
    StockAllocated,
    StockRejected,
    StockReserved,
)
from tweetshop_platform.consumer import handles, in_runs, together

from .usecases import read_models, reservations


async def on_merchant_event(conn: asyncpg.Connection, event: Envelope) -> None:
    """catalog.merchants.v1 → who may refund a merchant's orders (the hash of its API key)."""
    match event:
        case MerchantRegistered():
            await read_models.record_merchant_key(conn, event.merchant_id, event.api_key_sha256, rotated=False)
        case MerchantApiKeyRotated():
            await read_models.record_merchant_key(conn, event.merchant_id, event.api_key_sha256, rotated=True)


async def on_product_event(conn: asyncpg.Connection, event: Envelope) -> None:
    """catalog.products.v1 → the product read model (price, currency, stock, status)."""
    match event:
        case ProductListed() | ProductUpdated():
            await read_models.record_product(conn, event)


async def on_buyable_tweet(conn: asyncpg.Connection, event: Envelope) -> None:
    """feed.buyable-tweets.v1 → which product each tweet sells."""
    match event:
        case BuyableTweetPosted():
            await read_models.record_buyable_tweet(conn, event)


async def on_reservation_events(conn: asyncpg.Connection, events: list[Envelope]) -> None:
    """``on_reservation_event`` for a batch's events in turn: each run of StockReserved in one statement."""
    await in_runs(conn, events, StockReserved, reservations.on_stocks_reserved, on_reservation_event)


# StockReleased is catalog confirming what checkout asked for (after a failure or a refund): nothing to do, so
# it is skipped unread, without an inbox row.
@together(on_reservation_events)
@handles(StockReserved, StockRejected)
async def on_reservation_event(conn: asyncpg.Connection, event: Envelope) -> None:
    """catalog.reservations.v1 → charge the order, or cancel it."""
    match event:
        case StockReserved():
            await reservations.on_stock_reserved(conn, event)
        case StockRejected():
            await reservations.on_stock_rejected(conn, event)


async def on_allocation_event(conn: asyncpg.Connection, event: Envelope) -> None:
    """catalog.allocations.v1 → the units of each product checkout may reserve itself."""
    match event:
        case StockAllocated():
            await reservations.on_stock_allocated(conn, event)


async def on_shipment_events(conn: asyncpg.Connection, events: list[Envelope]) -> None:
    """``on_shipment_event`` for a batch's events, in one statement."""
    changes = [event for event in events if isinstance(event, ShipmentCreated | ShipmentStatusChanged)]
    if changes:
        await read_models.record_shipments(conn, changes)


@together(on_shipment_events)
async def on_shipment_event(conn: asyncpg.Connection, event: Envelope) -> None:
    """tracking.shipments.v1 → the order's shipment (its tracking_url)."""
    match event:
        case ShipmentCreated() | ShipmentStatusChanged():
            await read_models.record_shipment(conn, event)
