"""Orders still waiting for their payment past the deadline: ended from Stripe's truth (the reconciler's pass)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

import asyncpg
import structlog
from tweetshop_platform.uow import unit_of_work

from .. import metrics, repository
from ..config import CheckoutSettings
from ..gateway import PaymentGateway
from .payments import PaymentStep, settle_payment

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReconcileRun:
    """What one reconciler pass found and did."""

    taken: int
    ended: dict[str, int]  # final status ("retry": Stripe could not be asked; "mismatch": see payment_mismatches)
    still_overdue: int


async def reconcile_overdue(pool: asyncpg.Pool, gateway: PaymentGateway, settings: CheckoutSettings) -> ReconcileRun:
    """Drive orders still waiting for their payment past the deadline to a final status, from Stripe's truth.

    Each overdue order is leased (so no payment step works on it meanwhile), then asked of
    Stripe: a succeeded intent pays it, a failed one fails it, anything undecided is
    cancelled at Stripe before the order is cancelled and its stock released.
    """
    async with unit_of_work(pool) as uow:
        overdue = await repository.claim_overdue_orders(
            uow.conn,
            settings.payment_batch_size,
            settings.payment_lease_s,
            settings.payment_deadline_s,
            settings.action_deadline_s,
        )
    changes = await asyncio.gather(
        *(settle_payment(pool, gateway, settings, PaymentStep(order, overdue=True)) for order in overdue),
        return_exceptions=True,
    )
    ended: Counter[str] = Counter()
    for order, change in zip(overdue, changes, strict=True):
        if isinstance(change, BaseException):
            # One order's failure must not stop the others; its lease ends and the next pass tries again.
            log.error("reconciling an order failed", order_id=str(order.id), error=repr(change))
            ended["error"] += 1
        else:
            ended["retry" if change is None else "mismatch" if change.mismatch else change.after] += 1
    for outcome, count in ended.items():
        metrics.RECONCILED.labels(outcome).inc(count)
    async with pool.acquire() as conn:
        still_overdue = await repository.count_overdue_orders(
            conn, settings.payment_deadline_s, settings.action_deadline_s
        )
    metrics.OVERDUE_ORDERS.set(still_overdue)
    if overdue:
        log.info("reconciled overdue orders", taken=len(overdue), ended=dict(ended), still_overdue=still_overdue)
    return ReconcileRun(taken=len(overdue), ended=dict(ended), still_overdue=still_overdue)
