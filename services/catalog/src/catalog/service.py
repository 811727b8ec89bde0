"""Catalog use cases: thin, transactional, each state change and its events committed together."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter
from tweetshop_contracts import (
    MerchantApiKeyRotated,
    MerchantRegistered,
    OrderCancelled,
    OrderPaid,
    OrderPaymentFailed,
    OrderPlaced,
    OrderRefunded,
    ProductListed,
    ProductUpdated,
    StockAllocated,
    StockAllocationReturned,
    StockRejected,
    StockReleased,
    StockReserved,
)
from tweetshop_platform import outbox
from tweetshop_platform.auth import hash_secret, new_secret, secret_matches
from tweetshop_platform.errors import Conflict, Forbidden, NotFound, Unauthorized

from . import domain, repository
from .domain import Product

PRODUCER = "catalog"

log = structlog.get_logger(__name__)

ALLOCATED_ORDERS = Counter(
    "catalog_allocated_order_units_total",
    "Units of orders checkout reserved from its allocation, by where catalog found them: 'allocation' (an allocation "
    "in force, or one taken back whose units were still out), 'free' (more than the allocation held: no longer "
    "counted, such an order is decided as any other) or 'overdrawn' (no stock at all: the merchant set the stock "
    "below what checkout had already sold; see the runbook)",
    ["source"],
)
NOT_FROM_AN_ALLOCATION = Counter(
    "catalog_orders_not_from_an_allocation_total",
    "OrderPlaced events naming an allocation that cannot hold them (a generation never issued, or more units than "
    "catalog counts out with checkout under it): forged or corrupt, decided as any other order",
)
UNITS_ALLOCATED = Counter("catalog_units_allocated_total", "Units allocated to checkout (StockAllocated)")


def product_event(p: Product, correlation_id: str, *, listed: bool = False) -> ProductListed | ProductUpdated:
    """The full new state of a product as an event."""
    cls = ProductListed if listed else ProductUpdated
    return cls(
        producer=PRODUCER,
        correlation_id=correlation_id,
        product_id=p.id,
        merchant_id=p.merchant_id,
        title=p.title,
        description=p.description,
        image_url=p.image_url,
        price_minor=p.price_minor,
        currency=p.currency,
        stock_available=p.stock_available,
        status=p.status,
        version=p.version,
        units_reserved_total=p.units_reserved_total,
    )


async def register_merchant(pool: asyncpg.Pool, handle: str, name: str, correlation_id: str) -> tuple[uuid.UUID, str]:
    """A new merchant and its API key (shown once, stored hashed)."""
    merchant_id = domain.new_id()
    api_key, key_hash = new_secret("tsk")
    async with pool.acquire() as conn, conn.transaction():
        if not await repository.insert_merchant(conn, merchant_id, handle, name, key_hash):
            raise Conflict(f"the handle @{handle} is taken", code="handle_taken")
        await outbox.enqueue(
            conn,
            MerchantRegistered(
                producer=PRODUCER,
                correlation_id=correlation_id,
                merchant_id=merchant_id,
                handle=handle,
                name=name,
                api_key_sha256=key_hash,
            ),
        )
    return merchant_id, api_key


async def authorize_merchant(conn: asyncpg.Connection, merchant_id: uuid.UUID, api_key: str) -> None:
    """403 unless ``api_key`` is this merchant's key (404 when the merchant does not exist)."""
    merchant = await repository.get_merchant(conn, merchant_id)
    if merchant is None:
        raise NotFound("unknown merchant", code="unknown_merchant")
    if not secret_matches(api_key, merchant["api_key_hash"]):
        raise Forbidden("this key does not belong to the merchant")


async def merchant_for_key(pool: asyncpg.Pool, api_key: str) -> dict[str, Any]:
    """The merchant whose API key this is (a merchant signs in with its key), or 401."""
    async with pool.acquire() as conn:
        merchant = await repository.get_merchant_by_key_hash(conn, hash_secret(api_key))
    if merchant is None:
        raise Unauthorized("this API key belongs to no merchant (it may have been rotated)", code="invalid_api_key")
    return merchant


async def rotate_key(pool: asyncpg.Pool, merchant_id: uuid.UUID, api_key: str, correlation_id: str = "") -> str:
    """Replace the merchant's key; the old one stops working at once here, and in feed and checkout once they
    read MerchantApiKeyRotated (committed in the same transaction)."""
    new_key, key_hash = new_secret("tsk")
    async with pool.acquire() as conn, conn.transaction():
        await authorize_merchant(conn, merchant_id, api_key)
        await repository.set_merchant_key(conn, merchant_id, key_hash)
        await outbox.enqueue(
            conn,
            MerchantApiKeyRotated(
                producer=PRODUCER,
                correlation_id=correlation_id or f"rotate-{merchant_id}",
                merchant_id=merchant_id,
                api_key_sha256=key_hash,
            ),
        )
    return new_key


def _allocation(product: Product, units: int, correlation_id: str) -> StockAllocated:
    UNITS_ALLOCATED.inc(units)
    return StockAllocated(
        producer=PRODUCER,
        correlation_id=correlation_id,
        product_id=product.id,
        generation=product.allocation_generation,
        units=units,
    )


async def list_product(
    pool: asyncpg.Pool, api_key: str, product: Product, correlation_id: str, allocation_units: int = 0
) -> Product:
    """A merchant lists a new product; ``allocation_units`` of it are allocated to checkout at once (0: none)."""
    product, granted = domain.top_up(product, allocation_units)
    async with pool.acquire() as conn, conn.transaction():
        await authorize_merchant(conn, product.merchant_id, api_key)
        await repository.insert_product(conn, product)
        await outbox.enqueue(conn, product_event(product, correlation_id, listed=True))
        if granted:
            await outbox.enqueue(conn, _allocation(product, granted, correlation_id))
    return product


async def change_product(
    pool: asyncpg.Pool,
    api_key: str,
    product_id: uuid.UUID,
    changes: dict[str, object],
    correlation_id: str,
    allocation_units: int = 0,
) -> Product:
    """Change title, description, image, price, stock (units on sale) or status. Stock set below what is allocated
    to checkout takes the allocation back (``domain.restocked``): the new count is the merchant's."""
    async with pool.acquire() as conn, conn.transaction():
        current = await repository.get_product(conn, product_id, for_update=True)
        if current is None:
            raise NotFound("unknown product", code="unknown_product")
        await authorize_merchant(conn, current.merchant_id, api_key)
        fields = dict(changes)
        if "stock" in fields:
            fields["stock_available"] = fields.pop("stock")
        updated = replace(current, **fields, version=current.version + 1)  # type: ignore[arg-type]
        if updated == replace(current, version=current.version + 1):
            return current
        updated, granted = domain.restocked(updated, allocation_units)
        await repository.update_product(conn, updated)
        await outbox.enqueue(conn, product_event(updated, correlation_id))
        if granted is not None:
            await outbox.enqueue(conn, _allocation(updated, granted, correlation_id))
    return updated


async def get_product(pool: asyncpg.Pool, product_id: uuid.UUID) -> Product:
    async with pool.acquire() as conn:
        product = await repository.get_product(conn, product_id)
    if product is None:
        raise NotFound("unknown product", code="unknown_product")
    return product


async def on_allocation_returned(
    conn: asyncpg.Connection, event: StockAllocationReturned, allocation_units: int = 0
) -> None:
    """Checkout gave back allocated units it will never reserve: they may be reserved, or allocated again."""
    product = await repository.get_product(conn, event.product_id, for_update=True)
    if product is None:
        log.error("allocated units returned for an unknown product", product_id=str(event.product_id))
        return
    updated, granted = domain.top_up(domain.take_back(product, event.generation, event.units), allocation_units)
    await repository.update_product(conn, updated)
    if granted:
        await outbox.enqueue(conn, _allocation(updated, granted, event.correlation_id))


# --- reactions to checkout.orders.v1 ---------------------------------------------------


async def on_order_placed(
    conn: asyncpg.Connection,
    event: OrderPlaced,
    allocation_units: int = 0,
    rows: repository.OrderRows | None = None,
) -> None:
    """Reserve the order's stock, or reject it; both answers go on catalog.reservations.v1. An order checkout
    reserved from its allocation is recorded, never refused. Then checkout's allocation is topped up when it runs
    low (``allocation_units``: its size, 0 for none). ``rows``: where the reservation and the product are read and
    written (default: at once, ``repository.Rows``)."""
    rows = rows or repository.Rows(conn)
    answered, product = await rows.lock(event.order_id, event.product_id)
    if answered is not None:
        return  # already answered for this order
    if event.allocation_generation is not None:
        if product is None or domain.allocation_holds(product, event.allocation_generation, event.quantity):
            await _record_allocated(conn, rows, event, product, allocation_units)
            return
        NOT_FROM_AN_ALLOCATION.inc()
        log.error(
            "an order names an allocation that cannot hold it: decided as any other order",
            order_id=str(event.order_id),
            product_id=str(event.product_id),
            quantity=event.quantity,
            generation=event.allocation_generation,
            in_force=product.allocation_generation,
            allocated=product.stock_allocated,
            returning=product.stock_returning,
        )
    common = {
        "producer": PRODUCER,
        "correlation_id": event.correlation_id,
        "order_id": event.order_id,
        "product_id": event.product_id,
        "quantity": event.quantity,
    }
    try:
        updated, reservation = domain.reserve(product, event.order_id, event.quantity, event.currency)
    except domain.ReservationRefused as refused:
        await rows.save_reservation(
            domain.Reservation(event.order_id, event.product_id, event.quantity, "rejected", str(refused))
        )
        await outbox.enqueue(conn, StockRejected(**common, reason=str(refused)))
        return
    await _reserved(conn, rows, event, updated, reservation, allocation_units)


async def _record_allocated(
    conn: asyncpg.Connection,
    rows: repository.OrderRows,
    event: OrderPlaced,
    product: Product | None,
    allocation_units: int,
) -> None:
    assert event.allocation_generation is not None
    if product is None:
        # Catalog allocates only its own products: a forged or corrupt event. Nothing to record it against.
        log.error("an allocated order for an unknown product", order_id=str(event.order_id))
        ALLOCATED_ORDERS.labels("overdrawn").inc(event.quantity)
        return
    done = domain.reserve_allocated(product, event.order_id, event.quantity, event.allocation_generation)
    ALLOCATED_ORDERS.labels("allocation").inc(max(0, event.quantity - done.from_free - done.overdrawn))
    if done.from_free:
        ALLOCATED_ORDERS.labels("free").inc(done.from_free)
    if done.overdrawn:
        ALLOCATED_ORDERS.labels("overdrawn").inc(done.overdrawn)
        log.error(
            "an order reserved from a taken-back allocation found no stock: sold beyond the merchant's count",
            order_id=str(event.order_id),
            product_id=str(event.product_id),
            units=done.overdrawn,
        )
    if done.revoked:
        log.warning(
            "an order of a taken-back allocation left less stock than the allocation in force: taken back too",
            order_id=str(event.order_id),
            product_id=str(event.product_id),
            generation=done.product.allocation_generation,
        )
    await _reserved(conn, rows, event, done.product, done.reservation, allocation_units, revoked=done.revoked)


async def _reserved(
    conn: asyncpg.Connection,
    rows: repository.OrderRows,
    event: OrderPlaced,
    updated: Product,
    reservation: domain.Reservation,
    allocation_units: int,
    *,
    revoked: bool = False,
) -> None:
    """Save a reservation made and announce it, topping up checkout's allocation when it runs low. ``revoked``:
    the reservation took checkout's allocation back (a new generation), announced even when nothing is granted."""
    updated, granted = domain.top_up(updated, allocation_units)
    await rows.save(updated, reservation)
    await outbox.enqueue(
        conn,
        StockReserved(
            producer=PRODUCER,
            correlation_id=event.correlation_id,
            order_id=event.order_id,
            product_id=event.product_id,
            quantity=event.quantity,
        ),
    )
    # One ProductUpdated per product per consumer batch: its newest state, after all of the batch's reservations.
    await outbox.enqueue_newest(conn, product_event(updated, event.correlation_id))
    if granted or revoked:
        await outbox.enqueue(conn, _allocation(updated, granted, event.correlation_id))


async def on_order_paid(conn: asyncpg.Connection, event: OrderPaid, rows: repository.OrderRows | None = None) -> None:
    """Reserved stock becomes sold."""
    rows = rows or repository.Rows(conn)
    reservation, product = await rows.lock(event.order_id)
    if reservation is None or product is None:
        return
    updated, reservation = domain.commit(product, reservation)
    await rows.save(updated, reservation)


async def on_order_ended_unpaid(
    conn: asyncpg.Connection, event: OrderPaymentFailed | OrderCancelled, rows: repository.OrderRows | None = None
) -> None:
    """Release what was reserved for an order that will not be paid (once, never twice)."""
    await _give_back(conn, rows, event.order_id, event.correlation_id, event.reason, returned=False)


async def on_order_refunded(
    conn: asyncpg.Connection, event: OrderRefunded, rows: repository.OrderRows | None = None
) -> None:
    """Goods that come back with a refund go on sale again."""
    if event.restock:
        await _give_back(conn, rows, event.order_id, event.correlation_id, "refunded with return", returned=True)


async def _give_back(
    conn: asyncpg.Connection,
    rows: repository.OrderRows | None,
    order_id: uuid.UUID,
    correlation_id: str,
    reason: str,
    *,
    returned: bool,
) -> None:
    rows = rows or repository.Rows(conn)
    reservation, product = await rows.lock(order_id)
    if reservation is None or product is None:
        return
    move = domain.restock if returned else domain.release
    updated, reservation, moved = move(product, reservation, reason)
    if not moved:
        return
    await rows.save(updated, reservation)
    released = StockReleased(
        producer=PRODUCER,
        correlation_id=correlation_id,
        order_id=order_id,
        product_id=reservation.product_id,
        quantity=reservation.quantity,
        reason=reason[:500],
    )
    await outbox.enqueue(conn, released)
    await outbox.enqueue_newest(conn, product_event(updated, correlation_id))
