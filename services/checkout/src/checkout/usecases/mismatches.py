"""News of a PaymentIntent that may not move its order: kept, counted and logged for an operator."""

from __future__ import annotations

from typing import Literal

import asyncpg
import structlog

from .. import domain, metrics, repository
from ..domain import Order, PaymentOutcome

log = structlog.get_logger(__name__)

PaymentSource = Literal["worker", "webhook", "reconciler", "buyer_cancel"]


async def record_mismatch(
    conn: asyncpg.Connection,
    order: Order,
    outcome: PaymentOutcome,
    reason: domain.MismatchReason,
    source: PaymentSource,
) -> None:
    """Keep, count and log news of an intent that may not move the order (the order itself is left as it is)."""
    assert outcome.payment_intent_id is not None
    facts = outcome.facts or domain.IntentFacts()
    first = await repository.record_payment_mismatch(
        conn,
        order.id,
        outcome.payment_intent_id,
        reason,
        source,
        outcome.kind,
        amount_minor=facts.amount_minor,
        currency=facts.currency,
        livemode=facts.livemode,
    )
    if first:
        metrics.PAYMENT_MISMATCHES.labels(reason, source).inc()
    log.error(
        "a payment intent does not match its order and was not applied; an operator should look"
        + ("; a succeeded one may need a refund by hand" if outcome.kind == "paid" else ""),
        order_id=str(order.id),
        order_status=order.status,
        order_payment_intent_id=order.payment_intent_id,
        order_amount_minor=order.amount_minor,
        order_currency=order.currency,
        payment_intent_id=outcome.payment_intent_id,
        intent_outcome=outcome.kind,
        intent_amount_minor=facts.amount_minor,
        intent_currency=facts.currency,
        intent_livemode=facts.livemode,
        mismatch=reason,
        source=source,
    )


async def list_payment_mismatches(pool: asyncpg.Pool, limit: int) -> list[repository.PaymentMismatchRow]:
    """What operators look at when ``checkout_payment_mismatches_total`` rises."""
    async with pool.acquire() as conn:
        return await repository.list_payment_mismatches(conn, limit)
