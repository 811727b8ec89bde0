"""Catalog's answers to an order: its stock is reserved (the order is due for payment) or rejected (cancelled);
and the units catalog allocates to checkout, which orders then reserve from in their own transaction."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence

import asyncpg
import structlog
from tweetshop_contracts import StockAllocated, StockAllocationReturned, StockRejected, StockReserved, utc_now
from tweetshop_platform.uow import joining

from .. import domain, metrics, repository

log = structlog.get_logger(__name__)

# Orders a StockReserved made due for payment here, for the payment worker's wake-up (``made_due``). Most
# StockReserved in a drop or at any rate are for orders reserved from the allocation, due since their POST: those
# woke the worker for a claim that found nothing (one transaction, three statements, per order). Bounded: an id
# whose event never commits (parked) is forgotten in time; a missed wake-up costs at most the worker's poll.
_MADE_DUE: OrderedDict[uuid.UUID, None] = OrderedDict()
_MADE_DUE_MAX = 10_000


def remember_made_due(order_id: uuid.UUID) -> None:
    _MADE_DUE[order_id] = None
    if len(_MADE_DUE) > _MADE_DUE_MAX:
        _MADE_DUE.popitem(last=False)


def made_due(order_id: uuid.UUID) -> bool:
    """Whether a StockReserved applied in this process made ``order_id`` due for payment (asked once)."""
    if order_id not in _MADE_DUE:
        return False
    del _MADE_DUE[order_id]
    return True


async def on_stock_reserved(conn: asyncpg.Connection, event: StockReserved) -> None:
    """Stock is set aside: the order is due for payment (the worker charges it)."""
    order = await repository.get_order(conn, event.order_id, for_update=True)
    if order is None:
        log.warning("reservation for an unknown order", order_id=str(event.order_id))
        return
    # Heard, whatever became of the order since: catalog's units_reserved_total counts it too (once per order).
    await repository.count_reservation_heard(conn, order.id)
    updated = domain.mark_stock_reserved(order)
    if updated is order:
        return  # already reserved, or the order ended: nothing to charge (twice)
    await repository.save_order(conn, updated, next_payment_step_in=0)
    remember_made_due(order.id)


async def on_stocks_reserved(conn: asyncpg.Connection, events: Sequence[StockReserved]) -> None:
    """``on_stock_reserved`` for several events in turn, with the orders locked and marked heard in one statement."""
    orders = await repository.lock_orders_hearing_reservations(conn, [event.order_id for event in events])
    for event in events:
        order = orders.get(event.order_id)
        if order is None:
            log.warning("reservation for an unknown order", order_id=str(event.order_id))
            continue
        updated = domain.mark_stock_reserved(order)
        if updated is order:
            continue
        await repository.save_order(conn, updated, next_payment_step_in=0)
        orders[order.id] = updated
        remember_made_due(order.id)


async def on_stock_rejected(conn: asyncpg.Connection, event: StockRejected) -> None:
    """No stock for the order: it is cancelled with catalog's reason, and nothing is charged."""
    async with joining(conn) as uow:  # the consumer's transaction, with its inbox row
        order = await repository.get_order(conn, event.order_id, for_update=True)
        if order is None or order.status != "pending" or order.stock_reserved:
            return
        cancelled, cancelled_event = domain.cancel(order, event.reason, utc_now())
        await repository.save_order(conn, cancelled, next_payment_step_in=None)
        uow.publish(cancelled_event)
    metrics.count_transition(order.status, cancelled.status)


async def on_stock_allocated(conn: asyncpg.Connection, event: StockAllocated) -> None:
    """Units set aside for checkout: orders take them at the POST (``repository.insert_order``). What a new
    generation replaces, or a stale event brings, goes back to catalog (in this same transaction)."""
    returned = await repository.apply_allocation(conn, event.product_id, event.generation, event.units)
    if returned is None:
        return
    generation, units = returned
    async with joining(conn) as uow:
        uow.publish(
            StockAllocationReturned(
                producer=domain.PRODUCER,
                correlation_id=event.correlation_id,
                product_id=event.product_id,
                generation=generation,
                units=units,
            )
        )
    log.info("allocated units returned", product_id=str(event.product_id), generation=generation, units=units)
