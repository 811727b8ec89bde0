"""Checkout use cases: thin, transactional, each state change and its events committed together.

Stripe is never called inside a database transaction: a payment attempt is
recorded and committed first, Stripe is called, and the outcome is applied in a
new transaction under the order's row lock, where the payment worker and
Stripe's webhooks queue, so an order is paid (or failed) exactly once.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from typing import Literal

import asyncpg
import structlog
from tweetshop_contracts import (
    BuyableTweetPosted,
    Envelope,
    ProductListed,
    ProductUpdated,
    ShipmentCreated,
    ShipmentStatusChanged,
    StockRejected,
    StockReserved,
    utc_now,
)
from tweetshop_platform import faults, outbox
from tweetshop_platform.auth import is_operator_key
from tweetshop_platform.errors import Conflict, DomainError, Forbidden, NotFound, TooManyRequests, Unprocessable

from . import access, domain, metrics, repository
from .config import CheckoutSettings
from .domain import AWAITING_PAYMENT, Order, OrderStatus, PaymentOutcome, ProductView, PurchaseRequest, TweetView
from .gateway import Intent, PaymentDeclined, PaymentGateway, PaymentProviderUnavailable, RefundResult

log = structlog.get_logger(__name__)

_PURCHASE_ERRORS: dict[str, type[DomainError]] = {
    "unknown_product": NotFound,
    "product_unavailable": Conflict,
    "insufficient_stock": Conflict,
    "tweet_product_mismatch": Unprocessable,
}


def _count(before: OrderStatus | None, after: OrderStatus) -> None:
    if before != after:
        metrics.ORDER_TRANSITIONS.labels(before or "new", after).inc()


# --- read models of other services' topics ---------------------------------------------


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


# --- placing and reading orders --------------------------------------------------------


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    access_token: str
    replayed: bool


def _replay(found: repository.IdempotentOrder, request_hash: str, idempotency_key: str) -> PlacedOrder:
    if found.request_hash != request_hash:
        raise Conflict(
            "this Idempotency-Key was already used for a different order; use a new key for a new order",
            code="idempotency_key_reused",
            order_id=str(found.order.id),
        )
    token = access.unseal_token(found.access_token_sealed, idempotency_key, found.order.id)
    return PlacedOrder(found.order, token, replayed=True)


_UNPAID_WHAT = {"buyer": "this buyer", "payment_method": "this card", "address": "this shipping address"}


async def _refuse_too_many_unpaid(
    conn: asyncpg.Connection, request: PurchaseRequest, settings: CheckoutSettings
) -> None:
    """429 when the buyer, the card or the address already has ``unpaid_orders_cap`` orders waiting for payment.

    Unpaid orders hold stock: without a cap, a few hundred of them keep any product sold out.
    """
    shipping = request.shipping
    full = await repository.unpaid_orders_of(
        conn,
        request.buyer.id,
        request.payment_method,
        shipping.line1,
        shipping.city,
        shipping.country,
        settings.unpaid_orders_cap,
    )
    if full is None:
        return
    metrics.UNPAID_CAP_REFUSALS.labels(full).inc()
    raise TooManyRequests(
        f"{_UNPAID_WHAT[full]} already has {settings.unpaid_orders_cap} orders waiting for payment: "
        "finish paying or cancel one of them first",
        code="too_many_unpaid_orders",
        retry_after_s=min(settings.payment_recheck_interval_s, 60),
        limit=full,
    )


async def place_order(
    pool: asyncpg.Pool,
    settings: CheckoutSettings,
    request: PurchaseRequest,
    request_hash: str,
    idempotency_key: str,
    correlation_id: str,
) -> PlacedOrder:
    """One order per Idempotency-Key: a new pending order plus OrderPlaced, or the order this exact request made."""
    key_hash = access.idempotency_key_hash(idempotency_key)
    async with pool.acquire() as conn, conn.transaction():
        found = await repository.get_order_by_key(conn, key_hash)
        if found is not None:
            return _replay(found, request_hash, idempotency_key)
        if settings.unpaid_orders_cap:
            await _refuse_too_many_unpaid(conn, request, settings)
        product, tweet = await repository.get_product_and_tweet(conn, request.product_id, request.tweet_id)
        try:
            price = domain.price_purchase(product, tweet, request)
        except domain.PurchaseRefused as refused:
            raise _PURCHASE_ERRORS.get(refused.code, Conflict)(refused.message, code=refused.code) from None
        order, placed = domain.place(uuid.uuid4(), request, price, correlation_id, utc_now())
        token, token_hash = access.new_access_token()
        inserted = await repository.insert_order(
            conn,
            order,
            key_hash=key_hash,
            request_hash=request_hash,
            token_hash=token_hash,
            token_sealed=access.seal_token(token, idempotency_key, order.id),
        )
        if not inserted:
            # A concurrent request with the same key committed first: its row is visible now.
            twin = await repository.get_order_by_key(conn, key_hash)
            assert twin is not None
            return _replay(twin, request_hash, idempotency_key)
        await outbox.enqueue(conn, placed)
    _count(None, "pending")
    log.info("order placed", order_id=str(order.id), amount_minor=order.amount_minor, currency=order.currency)
    return PlacedOrder(order, token, replayed=False)


async def _authorize(conn: asyncpg.Connection, order_id: uuid.UUID, access_token: str) -> None:
    # Whether an order exists is private: a wrong token and no order answer the same.
    token_hash = await repository.get_access_token_hash(conn, order_id)
    if token_hash is None or not access.secret_matches(access_token, token_hash):
        raise NotFound("no such order (or not yours)", code="order_not_found")


async def get_order(pool: asyncpg.Pool, order_id: uuid.UUID, access_token: str) -> Order:
    """The order, for the bearer of its access token."""
    async with pool.acquire() as conn:
        await _authorize(conn, order_id, access_token)
        order = await repository.get_order(conn, order_id)
    assert order is not None
    return order


# --- catalog's answers -----------------------------------------------------------------


async def on_stock_reserved(conn: asyncpg.Connection, event: StockReserved) -> None:
    """Stock is set aside: the order is due for payment (the worker charges it)."""
    order = await repository.get_order(conn, event.order_id, for_update=True)
    if order is None:
        log.warning("reservation for an unknown order", order_id=str(event.order_id))
        return
    updated = domain.mark_stock_reserved(order)
    if updated is order:
        return  # already reserved, or the order ended: nothing to charge (twice)
    await repository.save_order(conn, updated, next_payment_step_in=0)


async def on_stock_rejected(conn: asyncpg.Connection, event: StockRejected) -> None:
    """No stock for the order: it is cancelled with catalog's reason, and nothing is charged."""
    order = await repository.get_order(conn, event.order_id, for_update=True)
    if order is None or order.status != "pending" or order.stock_reserved:
        return
    cancelled, cancelled_event = domain.cancel(order, event.reason, utc_now())
    await repository.save_order(conn, cancelled, next_payment_step_in=None)
    await outbox.enqueue(conn, cancelled_event)
    _count(order.status, cancelled.status)


# --- payments --------------------------------------------------------------------------


PaymentSource = Literal["worker", "webhook", "reconciler", "buyer_cancel"]


@dataclass(frozen=True)
class PaymentChange:
    """What a payment outcome did to its order: the statuses before and after, and why it was refused, if it was."""

    before: OrderStatus
    after: OrderStatus
    mismatch: domain.MismatchReason | None = None


async def _record_mismatch(
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


async def apply_payment_outcome(
    conn: asyncpg.Connection,
    order_id: uuid.UUID,
    outcome: PaymentOutcome,
    settings: CheckoutSettings,
    *,
    source: PaymentSource = "worker",
) -> PaymentChange | None:
    """Move the order as the PaymentIntent says, under its row lock; what changed, or None if the order is unknown.

    Only the order's own intent moves it, and a success only for its exact amount, currency and mode
    (``domain.payment_mismatch``); any other news is recorded for an operator and changes nothing.
    Whoever comes second (the worker or a webhook) finds the order already moved and changes nothing.
    """
    found = await repository.get_order_for_payment(conn, order_id)
    if found is None:
        return None
    order, access_hash = found
    now = utc_now()
    mismatch = domain.payment_mismatch(order, outcome, livemode=settings.stripe_livemode, may_adopt=source != "webhook")
    if mismatch is not None:
        if outcome.kind == "paid" or mismatch != "foreign_intent":
            await _record_mismatch(conn, order, outcome, mismatch, source)
        # else: news that another intent failed or waits; only the order's own intent matters to it.
        if order.status in AWAITING_PAYMENT and source != "webhook":
            # The order's own payment is still open: look again later, not in a loop.
            await repository.schedule_payment(conn, order.id, settings.payment_recheck_interval_s)
        return PaymentChange(order.status, order.status, mismatch)
    if order.status not in AWAITING_PAYMENT:
        if outcome.kind == "paid" and order.status in ("failed", "cancelled"):
            metrics.UNEXPECTED_PAYMENTS.inc()
            log.error(
                "a payment succeeded for an order that had ended; refund it by hand",
                order_id=str(order.id),
                status=order.status,
                payment_intent_id=outcome.payment_intent_id,
            )
        if order.payment_intent_id is None and outcome.payment_intent_id is not None:
            await repository.save_order(conn, replace(order, payment_intent_id=outcome.payment_intent_id))
        await repository.schedule_payment(conn, order.id, None)
        return PaymentChange(order.status, order.status)

    events: list[Envelope] = []
    next_look: float | None = None
    updated = order
    if outcome.kind == "paid" and outcome.payment_intent_id:
        updated, paid = domain.pay(order, outcome.payment_intent_id, now, buyer_access_sha256=access_hash)
        events.append(paid)
    elif outcome.kind == "failed":
        updated, failed = domain.fail_payment(
            order, outcome.reason or "the payment failed", outcome.payment_intent_id, now
        )
        events.append(failed)
    elif outcome.kind == "cancelled":
        updated, cancelled = domain.cancel(order, outcome.reason or "the payment was not completed", now)
        events.append(cancelled)
    elif outcome.kind == "requires_action" and outcome.payment_intent_id:
        if order.status != "requires_action":
            updated = domain.require_action(order, outcome.payment_intent_id, outcome.client_secret, now)
        next_look = settings.payment_recheck_interval_s
    else:  # processing: Stripe has not decided yet
        updated = replace(order, payment_intent_id=outcome.payment_intent_id or order.payment_intent_id)
        next_look = settings.payment_recheck_interval_s
    if updated.payment_retries:
        updated = replace(updated, payment_retries=0)  # Stripe answered: the outage backoff starts over
    if updated != order:
        await repository.save_order(conn, updated, next_payment_step_in=next_look)
    else:
        await repository.schedule_payment(conn, order.id, next_look)
    await outbox.enqueue(conn, *events)
    return PaymentChange(order.status, updated.status)


@dataclass(frozen=True)
class PaymentStep:
    """An order leased for one step with Stripe; ``overdue``: past its deadline, so it is only ended."""

    order: Order
    overdue: bool


async def claim_due_payments(
    pool: asyncpg.Pool, settings: CheckoutSettings, *, limit: int | None = None
) -> list[PaymentStep]:
    """Up to ``limit`` (default: the batch size) orders due for a payment step, leased to this worker; the
    attempt is committed before Stripe is called."""
    async with pool.acquire() as conn, conn.transaction():
        claimed = await repository.claim_due_payments(
            conn,
            limit or settings.payment_batch_size,
            settings.payment_lease_s,
            settings.payment_deadline_s,
            settings.action_deadline_s,
        )
    return [PaymentStep(order, overdue) for order, overdue in claimed]


async def _ask_stripe(gateway: PaymentGateway, order: Order, *, overdue: bool) -> PaymentOutcome:
    try:
        if overdue:
            return await _end_overdue(gateway, order)
        if order.payment_intent_id is not None:
            return (await gateway.retrieve_intent(order.payment_intent_id)).outcome()
        if order.payment_attempts > 1:
            # An earlier attempt was recorded without its intent id (a crash or a lost answer): adopt what it made.
            found = await gateway.find_intent_for_order(order)
            if found is not None:
                log.info("adopted the payment intent of an earlier attempt", payment_intent_id=found.id)
                return found.outcome()
        intent = await gateway.create_intent(order, order.payment_attempts)
        return intent.outcome()
    except PaymentDeclined as declined:
        return PaymentOutcome("failed", declined.payment_intent_id, reason=declined.message)


async def _end_overdue(gateway: PaymentGateway, order: Order) -> PaymentOutcome:
    """An order past its deadline ends as Stripe says: paid or failed if decided, else its intent is cancelled first.

    The caller holds the order's lease, so no attempt of ours is creating an intent meanwhile:
    an attempt recorded without an intent id left one at Stripe (found by metadata) or none.
    """
    intent: Intent | None = None
    if order.payment_intent_id is not None:
        intent = await gateway.retrieve_intent(order.payment_intent_id)
    elif order.payment_attempts > 0:
        intent = await gateway.find_intent_for_order(order)
    if intent is None:
        return PaymentOutcome("cancelled", None, reason=domain.NOT_PAID_IN_TIME)
    outcome = intent.outcome()
    if outcome.kind not in ("requires_action", "processing"):
        return outcome
    return await _cancel_at_stripe(gateway, intent.id, domain.NOT_PAID_IN_TIME)


async def _cancel_at_stripe(gateway: PaymentGateway, payment_intent_id: str, reason: str) -> PaymentOutcome:
    """Cancel the intent so it can never be paid; if Stripe refuses, what the intent is now decides."""
    try:
        await gateway.cancel_intent(payment_intent_id)
    except PaymentDeclined:
        # Too late to cancel: the buyer finished paying (or the payment is processing) meanwhile.
        return (await gateway.retrieve_intent(payment_intent_id)).outcome()
    return PaymentOutcome("cancelled", payment_intent_id, reason=reason)


def retry_delay(
    failures: int, settings: CheckoutSettings, jitter: float | None = None, *, at_least: float = 0.0
) -> float:
    """Backoff while Stripe is unreachable or limits our rate: 0.5 s, 1 s, 2 s, ... up to the maximum, ±25 %.

    The jitter (``random.random()`` unless given) spreads the retries of orders that failed together,
    so a Stripe that comes back (or a rate limit that lifts) is not hit by all of them at once.
    """
    base = min(0.5 * 2 ** max(failures - 1, 0), settings.payment_retry_max_backoff_s)
    spread = 0.75 + 0.5 * (random.random() if jitter is None else jitter)
    return float(max(min(base * spread, settings.payment_retry_max_backoff_s), at_least))


async def _retry_later(
    pool: asyncpg.Pool,
    settings: CheckoutSettings,
    order_id: uuid.UUID,
    error: str,
    *,
    nothing_done: bool = False,
    undo_attempt: bool = False,
) -> None:
    """Back off after Stripe failed. ``nothing_done``: Stripe refused before acting (a rate limit);
    ``undo_attempt``: and this step was a creation attempt, which made nothing and is given back."""
    async with pool.acquire() as conn, conn.transaction():
        current = await repository.get_order(conn, order_id, for_update=True)
        if current is None or current.status not in AWAITING_PAYMENT:
            return
        failures = current.payment_retries + 1
        # A creation whose answer was lost may still land at Stripe: the next attempt, which searches for it
        # before creating, waits at least as long as a call may take. A rate-limited one made nothing: the next
        # attempt comes after the usual backoff, with the same idempotency key and without searching for it.
        creating = current.payment_intent_id is None
        lost_creation = creating and not nothing_done
        delay = retry_delay(failures, settings, at_least=settings.stripe_timeout_s if lost_creation else 0.0)
        await repository.save_order(conn, replace(current, payment_retries=failures), next_payment_step_in=delay)
        if undo_attempt and creating and nothing_done:
            await repository.undo_payment_attempt(conn, order_id)
    metrics.PAYMENT_RETRIES.inc()
    log.warning("stripe unavailable; payment will be retried", error=error, failures=failures, retry_in=delay)


async def settle_payment(
    pool: asyncpg.Pool, gateway: PaymentGateway, settings: CheckoutSettings, step: PaymentStep
) -> PaymentChange | None:
    """Take one leased order one step further with Stripe: create, adopt, check or end its PaymentIntent.

    Returns what changed, or None when Stripe could not be asked (retried later).
    """
    order = step.order
    with structlog.contextvars.bound_contextvars(correlation_id=order.correlation_id, order_id=str(order.id)):
        try:
            outcome = await _ask_stripe(gateway, order, overdue=step.overdue)
        except PaymentProviderUnavailable as exc:
            # The claim counted a creation attempt for a pending order in time without an intent (see
            # repository.claim_due_payments): when Stripe provably did nothing, it is given back.
            created_attempt = not step.overdue and order.status == "pending" and order.payment_intent_id is None
            await _retry_later(
                pool,
                settings,
                order.id,
                str(exc),
                nothing_done=exc.nothing_done,
                undo_attempt=created_attempt,
            )
            return None
        # Chaos tests only (off by default): die after Stripe acted and before the database knows.
        faults.maybe_crash("checkout_after_stripe")
        async with pool.acquire() as conn, conn.transaction():
            change = await apply_payment_outcome(
                conn, order.id, outcome, settings, source="reconciler" if step.overdue else "worker"
            )
        if change is not None:
            _count(change.before, change.after)
            if change.before != change.after:
                log.info("payment step applied", transition=f"{change.before}->{change.after}", outcome=outcome.kind)
        return change


async def list_payment_mismatches(pool: asyncpg.Pool, limit: int) -> list[repository.PaymentMismatchRow]:
    """What operators look at when ``checkout_payment_mismatches_total`` rises."""
    async with pool.acquire() as conn:
        return await repository.list_payment_mismatches(conn, limit)


# --- the reconciler: orders still open past their deadline ------------------------------


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
    async with pool.acquire() as conn, conn.transaction():
        overdue = await repository.claim_overdue_orders(
            conn,
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


# --- the buyer cancels ------------------------------------------------------------------


async def cancel_order(
    pool: asyncpg.Pool, gateway: PaymentGateway, settings: CheckoutSettings, order_id: uuid.UUID, access_token: str
) -> Order:
    """The buyer gives up an order not paid yet: nothing is charged, OrderCancelled releases its stock."""
    async with pool.acquire() as conn, conn.transaction():
        await _authorize(conn, order_id, access_token)
        order = await repository.get_order(conn, order_id, for_update=True)
        assert order is not None
        try:
            plan = domain.plan_buyer_cancel(order)
        except domain.CancelRefused as refused:
            raise Conflict(refused.message, code=refused.code, status_now=order.status) from None
        if plan == "already_cancelled":
            return order
        cancelled: Order | None = None
        if plan == "cancel_now":
            cancelled, event = domain.cancel(order, domain.CANCELLED_BY_BUYER, utc_now())
            await repository.save_order(conn, cancelled, next_payment_step_in=None)
            await outbox.enqueue(conn, event)
    if cancelled is not None:
        _count(order.status, cancelled.status)
        log.info("order cancelled by the buyer", order_id=str(order.id))
        return cancelled
    assert order.payment_intent_id is not None
    try:
        outcome = await _cancel_at_stripe(gateway, order.payment_intent_id, domain.CANCELLED_BY_BUYER)
    except PaymentProviderUnavailable:
        raise DomainError(
            "the payment provider did not answer; nothing was cancelled, try again",
            code="payment_provider_unavailable",
            status=503,
        ) from None
    except PaymentDeclined as declined:
        raise Conflict(f"Stripe refused the cancellation: {declined.message}", code="cancel_refused") from None
    async with pool.acquire() as conn, conn.transaction():
        change = await apply_payment_outcome(conn, order.id, outcome, settings, source="buyer_cancel")
        current = await repository.get_order(conn, order.id)
    assert current is not None
    if change is not None:
        _count(change.before, change.after)
    if current.status == "cancelled":
        log.info("order cancelled by the buyer", order_id=str(order.id), payment_intent_id=order.payment_intent_id)
        return current
    try:
        domain.plan_buyer_cancel(current)
    except domain.CancelRefused as refused:
        raise Conflict(refused.message, code=refused.code, status_now=current.status) from None
    raise Conflict(
        "the payment is being processed right now; try again in a few seconds",
        code="payment_in_progress",
        status_now=current.status,
    )


# --- Stripe webhooks -------------------------------------------------------------------

_WEBHOOK_OUTCOMES = {
    "payment_intent.succeeded": "paid",
    "payment_intent.payment_failed": "failed",
    "payment_intent.canceled": "cancelled",
}


def _uuid_or_none(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


async def handle_stripe_event(
    pool: asyncpg.Pool, gateway: PaymentGateway, settings: CheckoutSettings, event: dict[str, object]
) -> str:
    """Apply one verified Stripe event once; returns what happened (for logs and metrics).

    A webhook only says "look at this intent": its intent must be the one recorded on the order,
    and what the order becomes is decided by Stripe's own object (retrieved), checked against the
    order's amount, currency and mode like every other payment outcome. An intent not recorded yet
    is left to the payment step that is creating it (it records what Stripe answered it).
    """
    event_id = str(event.get("id", ""))
    event_type = str(event.get("type", ""))
    kind = _WEBHOOK_OUTCOMES.get(event_type)
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if kind is None or not isinstance(obj, dict) or not event_id or "id" not in obj:
        return "ignored"
    said = Intent.from_data(obj)
    order_id = _uuid_or_none(said.order_id)
    async with pool.acquire() as conn:
        if order_id is None:
            order_id = await repository.get_order_id_by_intent(conn, said.id)
        seen, status, recorded_intent = (
            (False, None, None) if order_id is None else await repository.webhook_precheck(conn, event_id, order_id)
        )
    if seen:
        return "duplicate"
    if order_id is None or status is None:
        return "not_ours"  # another shop on the same Stripe account (or localstripe shared by tests)
    if recorded_intent is None:
        return "deferred"  # the payment step creating this order's intent records it (or finds it after a crash)
    if said.id != recorded_intent:
        if kind != "paid":
            return "no_change"  # another intent failed or was cancelled: only the order's own intent matters
    elif status not in AWAITING_PAYMENT and not (kind == "paid" and status in ("failed", "cancelled")):
        return "no_change"  # the usual case: the payment step applied Stripe's answer before this webhook came
    if said.id == recorded_intent:
        try:
            outcome = (await gateway.retrieve_intent(said.id)).outcome()  # Stripe's own object decides
        except (PaymentProviderUnavailable, PaymentDeclined) as exc:
            # Not recorded as seen: Stripe delivers the event again, and the payment step rechecks meanwhile.
            raise DomainError(
                "Stripe could not be asked about this payment; deliver the event again later",
                code="payment_provider_unavailable",
                status=503,
            ) from exc
    else:
        outcome = said.outcome()  # a foreign intent claims the order: recorded as a mismatch, never applied
    async with pool.acquire() as conn, conn.transaction():
        if not await repository.record_stripe_event(conn, event_id, event_type, order_id):
            return "duplicate"
        change = await apply_payment_outcome(conn, order_id, outcome, settings, source="webhook")
    if change is None:
        return "not_ours"
    _count(change.before, change.after)
    if change.mismatch is not None:
        return "mismatch"
    return "applied" if change.before != change.after else "no_change"


# --- refunds ---------------------------------------------------------------------------


async def record_merchant_key(
    conn: asyncpg.Connection, merchant_id: uuid.UUID, api_key_hash: str | None, *, rotated: bool
) -> None:
    """Who may refund this merchant's orders, from catalog.merchants.v1."""
    await repository.record_merchant_key(conn, merchant_id, api_key_hash, rotated=rotated)


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
    async with pool.acquire() as conn, conn.transaction():
        order = await repository.get_order(conn, order_id, for_update=True)
        if order is None:
            raise NotFound("no such order", code="order_not_found")
        await _authorize_refund(conn, settings, order, merchant_key)
        in_flight = await repository.refunds_in_flight_minor(conn, order_id)
        try:
            amount = domain.plan_refund(order, amount_minor, in_flight)
        except domain.RefundRefused as refused:
            raise Conflict(refused.message, code=refused.code) from None
        await repository.insert_refund(conn, refund_id, order_id, amount, settings.refund_recheck_after_s)
    assert order.payment_intent_id is not None
    try:
        result = await gateway.create_refund(order.payment_intent_id, amount, refund_id, order.id)
    except PaymentDeclined as declined:
        async with pool.acquire() as conn, conn.transaction():
            await repository.finish_refund(conn, refund_id, "failed", failure_reason=declined.message)
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
    async with pool.acquire() as conn, conn.transaction():
        refund_row = await repository.get_refund(conn, refund_id)
        assert refund_row is not None
        # Lock the order before the refund row, as refund_order does: no lock-order deadlock.
        order = await repository.get_order(conn, refund_row.order_id, for_update=True)
        refund_row = await repository.get_refund(conn, refund_id, for_update=True)
        assert order is not None and refund_row is not None
        if refund_row.status != "requested":
            return order
        updated, refunded = domain.refund(order, refund_row.amount_minor, utc_now())
        await repository.save_order(conn, updated)
        await repository.finish_refund(conn, refund_id, "succeeded", stripe_refund_id=result.id)
        await outbox.enqueue(conn, refunded)
    _count(order.status, updated.status)
    log.info("order refunded", order_id=str(order.id), amount_minor=refund_row.amount_minor, full=refunded.full)
    return updated


async def resume_stale_refunds(pool: asyncpg.Pool, gateway: PaymentGateway, settings: CheckoutSettings) -> int:
    """Finish refunds whose Stripe answer was lost: adopt Stripe's refund if it exists, else ask again."""
    async with pool.acquire() as conn, conn.transaction():
        stale = await repository.claim_stale_refunds(conn, settings.payment_batch_size, settings.payment_lease_s)
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
            async with pool.acquire() as conn, conn.transaction():
                await repository.finish_refund(conn, row.id, "failed", failure_reason=declined.message)
            continue
        except PaymentProviderUnavailable as exc:
            log.warning("stripe unavailable; refund will be retried", refund_id=str(row.id), error=str(exc))
            continue
        await complete_refund(pool, row.id, result)
    return len(stale)
