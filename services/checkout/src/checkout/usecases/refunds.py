"""Refunds: the merchant (or an operator) gives money back; a refund whose Stripe answer was lost is finished later."""

from __future__ import annotations

import uuid

import asyncpg
import structlog
from tweetshop_contracts import utc_now
from tweetshop_platform.auth import is_operator_key
from tweetshop_platform.errors import Conflict, DomainError, Forbidden, NotFound
from tweetshop_platform.uow import unit_of_work

from .. import access, domain, metrics, repository
from ..config import CheckoutSettings
from ..domain import Order
from ..gateway import PaymentDeclined, PaymentGateway, PaymentProviderUnavailable, RefundResult

log = structlog.get_logger(__name__)


async def _authorize_refund(conn: asyncpg.Connection, settings: CheckoutSettings, order: Order, key: str) -> None:
    """Refunds are the merchant's (its API key) or an operator's; 403 for anyone else, the buyer included."""
    if is_operator_key(key, settings.operator_key):
        return
    merchant_key_hash = await repository.get_merchant_key_hash(conn, order.merchant_id)
    if merchant_key_hash is not None and access.secret_matches(key, merchant_key_hash):
        return
    buyer_token_hash = await repository.get_access_token_hash(conn, order.id)
    if buyer_token_hash is not None and access.secret_matches(key, buyer_token_hash):
        raise Forbidden("refunds are made by the merchant: ask the shop", code="refund_by_merchant_only")
    raise Forbidden("this key is not the key of the order's merchant", code="not_the_merchant")


async def _refund_failed(pool: asyncpg.Pool, refund_id: uuid.UUID, declined: PaymentDeclined) -> None:
    async with unit_of_work(pool) as uow:
        await repository.finish_refund(uow.conn, refund_id, "failed", failure_reason=declined.message)


async def refund_order(
    pool: asyncpg.Pool,
    gateway: PaymentGateway,
    settings: CheckoutSettings,
    order_id: uuid.UUID,
    merchant_key: str,
    amount_minor: int | None,
) -> Order:
    """Give money back (all that is left by default); OrderRefunded goes out with the new status."""
    refund_id = uuid.uuid4()
    async with unit_of_work(pool) as uow:
        order = await repository.get_order(uow.conn, order_id, for_update=True)
        if order is None:
            raise NotFound("no such order", code="order_not_found")
        await _authorize_refund(uow.conn, settings, order, merchant_key)
        in_flight = await repository.refunds_in_flight_minor(uow.conn, order_id)
        try:
            amount = domain.plan_refund(order, amount_minor, in_flight)
        except domain.RefundRefused as refused:
            raise Conflict(refused.message, code=refused.code) from None
        await repository.insert_refund(uow.conn, refund_id, order_id, amount, settings.refund_recheck_after_s)
    assert order.payment_intent_id is not None
    try:
        result = await gateway.create_refund(order.payment_intent_id, amount, refund_id, order.id)
    except PaymentDeclined as declined:
        await _refund_failed(pool, refund_id, declined)
        raise Conflict(f"Stripe refused the refund: {declined.message}", code="refund_refused") from None
    except PaymentProviderUnavailable:
        raise DomainError(
            "the payment provider did not answer; the refund is recorded and will be completed automatically",
            code="payment_provider_unavailable",
            status=503,
            refund_id=str(refund_id),
        ) from None
    return await complete_refund(pool, refund_id, result)


async def complete_refund(pool: asyncpg.Pool, refund_id: uuid.UUID, result: RefundResult) -> Order:
    """Record Stripe's refund on the order, once."""
    async with unit_of_work(pool) as uow:
        refund_row = await repository.get_refund(uow.conn, refund_id)
        assert refund_row is not None
        # Lock the order before the refund row, as refund_order does: no lock-order deadlock.
        order = await repository.get_order(uow.conn, refund_row.order_id, for_update=True)
        refund_row = await repository.get_refund(uow.conn, refund_id, for_update=True)
        assert order is not None and refund_row is not None
        if refund_row.status != "requested":
            return order
        updated, refunded = domain.refund(order, refund_row.amount_minor, utc_now())
        await repository.save_order(uow.conn, updated)
        await repository.finish_refund(uow.conn, refund_id, "succeeded", stripe_refund_id=result.id)
        uow.publish(refunded)
    metrics.count_transition(order.status, updated.status)
    log.info("order refunded", order_id=str(order.id), amount_minor=refund_row.amount_minor, full=refunded.full)
    return updated


async def resume_stale_refunds(pool: asyncpg.Pool, gateway: PaymentGateway, settings: CheckoutSettings) -> int:
    """Finish refunds whose Stripe answer was lost: adopt Stripe's refund if it exists, else ask again."""
    async with unit_of_work(pool) as uow:
        stale = await repository.claim_stale_refunds(uow.conn, settings.payment_batch_size, settings.payment_lease_s)
    for row in stale:
        async with pool.acquire() as conn:
            order = await repository.get_order(conn, row.order_id)
        if order is None or order.payment_intent_id is None:
            continue
        try:
            result = await gateway.find_refund(order.payment_intent_id, row.id)
            if result is None:
                result = await gateway.create_refund(order.payment_intent_id, row.amount_minor, row.id, order.id)
        except PaymentDeclined as declined:
            await _refund_failed(pool, row.id, declined)
            continue
        except PaymentProviderUnavailable as exc:
            log.warning("stripe unavailable; refund will be retried", refund_id=str(row.id), error=str(exc))
            continue
        await complete_refund(pool, row.id, result)
    return len(stale)
