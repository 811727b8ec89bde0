"""Read models of other services' topics: products, buyable tweets, shipments, merchants' keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
import structlog
from tweetshop_contracts import (
    BuyableTweetPosted,
    ProductListed,
    ProductUpdated,
    ShipmentCreated,
    ShipmentStatusChanged,
)

from .. import repository
from ..domain import ProductView, TweetView

log = structlog.get_logger(__name__)


async def record_product(conn: asyncpg.Connection, event: ProductListed | ProductUpdated) -> None:
    """Keep catalog's latest word on a product (older versions arriving late are dropped)."""
    await repository.upsert_product(
        conn,
        ProductView(
            id=event.product_id,
            merchant_id=event.merchant_id,
            title=event.title,
            price_minor=event.price_minor,
            currency=event.currency,
            stock_available=event.stock_available,
            status=event.status,
            version=event.version,
            units_reserved_total=event.units_reserved_total,
        ),
    )


async def record_buyable_tweet(conn: asyncpg.Connection, event: BuyableTweetPosted) -> None:
    """Remember which product a tweet sells."""
    await repository.upsert_tweet(
        conn,
        TweetView(tweet_id=event.tweet_id, product_id=event.product_id, merchant_id=event.merchant_id),
        event.posted_at,
    )


async def record_shipment(conn: asyncpg.Connection, event: ShipmentCreated | ShipmentStatusChanged) -> None:
    """The order's parcel got a shipment (GET /orders/{id} then shows tracking_url) or moved on."""
    status = event.status if isinstance(event, ShipmentCreated) else event.to_status
    if not await repository.set_shipment(conn, event.order_id, event.shipment_id, status):
        log.warning("shipment for an unknown order", order_id=str(event.order_id))


async def record_shipments(conn: asyncpg.Connection, events: Sequence[ShipmentCreated | ShipmentStatusChanged]) -> None:
    """``record_shipment`` for several events in turn, in one statement."""
    changes = [(e.order_id, e.shipment_id, e.status if isinstance(e, ShipmentCreated) else e.to_status) for e in events]
    ours = await repository.set_shipments(conn, changes)
    for order_id, _, _ in changes:
        if order_id not in ours:
            log.warning("shipment for an unknown order", order_id=str(order_id))


async def record_merchant_key(
    conn: asyncpg.Connection, merchant_id: uuid.UUID, api_key_hash: str | None, *, rotated: bool
) -> None:
    """Who may refund this merchant's orders, from catalog.merchants.v1."""
    await repository.record_merchant_key(conn, merchant_id, api_key_hash, rotated=rotated)
