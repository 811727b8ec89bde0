"""Payments: claim due orders, ask Stripe, and apply its answer under the order's row lock.

Stripe is never called inside a database transaction: the claim commits the attempt first, Stripe is
called, and the outcome is applied in a new transaction, where the payment worker, the reconciler, the
buyer's cancellation and Stripe's webhooks queue, so an order is paid (or failed) exactly once.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, replace

import asyncpg
import structlog
from tweetshop_contracts import utc_now
from tweetshop_platform import faults
from tweetshop_platform.uow import UnitOfWork, unit_of_work

from .. import domain, metrics, repository
from ..config import CheckoutSettings
from ..domain import AWAITING_PAYMENT, Order, OrderStatus, PaymentOutcome
from ..gateway import Intent, PaymentDeclined, PaymentGateway, PaymentProviderUnavailable
from .mismatches import PaymentSource, record_mismatch

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PaymentChange:
    """What a payment outcome did to its order: the statuses before and after, and why it was refused, if it was."""

    before: OrderStatus
    after: OrderStatus
    mismatch: domain.MismatchReason | None = None


def _decide(
    order: Order, outcome: PaymentOutcome, settings: CheckoutSettings, source: PaymentSource, access_hash: str | None
) -> domain.PaymentDecision:
    """The payment rule as both ways of applying an outcome take it: ``domain.decide_payment`` with the settings,
    adoption for our own payment steps only, and the buyer's access token's hash for OrderPaid."""
    return domain.decide_payment(
        order,
        outcome,
        livemode=settings.stripe_livemode,
        may_adopt=source != "webhook",
        recheck_s=settings.payment_recheck_interval_s,
        now=utc_now(),
        buyer_access_sha256=access_hash,
    )


async def apply_payment_outcome(
    uow: UnitOfWork,
    order_id: uuid.UUID,
    outcome: PaymentOutcome,
    settings: CheckoutSettings,
    *,
    source: PaymentSource = "worker",
) -> PaymentChange | None:
    """Move the order as the PaymentIntent says (``domain.decide_payment``), under its row lock; what changed, or
    None if the order is unknown. A mismatch is recorded for an operator and changes nothing."""
    found = await repository.get_order_for_payment(uow.conn, order_id)
    if found is None:
        return None
    order, access_hash = found
    decision = _decide(order, outcome, settings, source, access_hash)
    if decision.mismatch is not None and decision.record_mismatch:
        await record_mismatch(uow.conn, order, outcome, decision.mismatch, source)
    if decision.unexpected_payment:
        metrics.UNEXPECTED_PAYMENTS.inc()
        log.error(
            "a payment succeeded for an order that had ended; refund it by hand",
            order_id=str(order.id),
            status=order.status,
            payment_intent_id=outcome.payment_intent_id,
        )
    if decision.order != order:
        if decision.reschedule:
            await repository.save_order(uow.conn, decision.order, next_payment_step_in=decision.next_step_in)
        else:
            await repository.save_order(uow.conn, decision.order)
    elif decision.reschedule:
        await repository.schedule_payment(uow.conn, order.id, decision.next_step_in)
    uow.publish(*decision.events)
    return PaymentChange(order.status, decision.order.status, decision.mismatch)


@dataclass(frozen=True)
class PaymentStep:
    """An order leased for one step with Stripe; ``overdue``: past its deadline, so it is only ended.

    From the worker's claim, also the order's version as a payment decision sees it and its access token's hash:
    Stripe's answer is then applied to the order as claimed, if that did not change since (``apply_as_claimed``).
    """

    order: Order
    overdue: bool
    version: str | None = None
    access_hash: str | None = None


async def apply_as_claimed(
    conn: asyncpg.Connection,
    step: PaymentStep,
    outcome: PaymentOutcome,
    settings: CheckoutSettings,
    *,
    source: PaymentSource = "worker",
) -> PaymentChange | None:
    """``apply_payment_outcome`` in one statement, without the row lock, the read or a transaction: the order as
    the claim returned it decides (``domain.decide_payment``, the same rule), and the decision is written with its
    events only if the order is still as claimed (``repository.save_order_if_unchanged``: every column the decision
    reads or the write writes, its access token's hash and its payment lease).

    None, and nothing written, when that cannot be: the order changed since the claim (a webhook, the buyer's
    cancellation, another lease), the step has no claimed version (the reconciler's), or the decision asks for
    more than the order's row and its events (a mismatch to record, a payment to refund by hand, nothing to
    write). The caller then applies the outcome under the row lock, as ever; whoever comes second finds the order
    moved.
    """
    if step.version is None:
        return None
    order = step.order
    decision = _decide(order, outcome, settings, source, step.access_hash)
    if decision.record_mismatch or decision.unexpected_payment:
        return None
    if decision.order == order and not decision.reschedule:
        return None
    schedule: dict[str, object] = {"next_payment_step_in": decision.next_step_in} if decision.reschedule else {}
    written = await repository.save_order_if_unchanged(conn, decision.order, step.version, decision.events, **schedule)
    if not written:
        metrics.PAYMENT_APPLY_CONFLICTS.inc()
        return None
    return PaymentChange(order.status, decision.order.status, decision.mismatch)


async def claim_due_payments(
    pool: asyncpg.Pool, settings: CheckoutSettings, *, limit: int | None = None
) -> list[PaymentStep]:
    """Up to ``limit`` (default: the batch size) orders due for a payment step, leased to this worker; the
    attempt is committed before Stripe is called. The claim is one statement, committed on its own (no
    ``BEGIN``/``COMMIT`` round trips around it)."""
    async with pool.acquire() as conn:
        claimed = await repository.claim_due_payments(
            conn,
            limit or settings.payment_batch_size,
            settings.payment_lease_s,
            settings.payment_deadline_s,
            settings.action_deadline_s,
        )
    return [PaymentStep(c.order, c.overdue, c.version, c.access_hash) for c in claimed]


async def ask_stripe(gateway: PaymentGateway, order: Order, *, overdue: bool) -> PaymentOutcome:
    """What the order's payment is at Stripe after one step: create its intent, adopt or check it, or end it.

    Within the deadline: the recorded intent is checked; from the second attempt on, an intent an earlier
    attempt made (recorded without its id) is adopted; else one is created. Past the deadline (``overdue``,
    the database's verdict) no intent is created: the order ends as Stripe says (``end_overdue``). A declined
    card is a failed outcome; Stripe being unreachable raises PaymentProviderUnavailable.
    """
    try:
        if overdue:
            return await end_overdue(gateway, order)
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


async def end_overdue(gateway: PaymentGateway, order: Order) -> PaymentOutcome:
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
    return await cancel_at_stripe(gateway, intent.id, domain.NOT_PAID_IN_TIME)


async def cancel_at_stripe(gateway: PaymentGateway, payment_intent_id: str, reason: str) -> PaymentOutcome:
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
    async with unit_of_work(pool) as uow:
        current = await repository.get_order(uow.conn, order_id, for_update=True)
        if current is None or current.status not in AWAITING_PAYMENT:
            return
        failures = current.payment_retries + 1
        # A creation whose answer was lost may still land at Stripe: the next attempt, which searches for it
        # before creating, waits at least as long as a call may take. A rate-limited one made nothing: the next
        # attempt comes after the usual backoff, with the same idempotency key and without searching for it.
        creating = current.payment_intent_id is None
        lost_creation = creating and not nothing_done
        delay = retry_delay(failures, settings, at_least=settings.stripe_timeout_s if lost_creation else 0.0)
        await repository.save_order(uow.conn, replace(current, payment_retries=failures), next_payment_step_in=delay)
        if undo_attempt and creating and nothing_done:
            await repository.undo_payment_attempt(uow.conn, order_id)
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
            outcome = await ask_stripe(gateway, order, overdue=step.overdue)
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
        source: PaymentSource = "reconciler" if step.overdue else "worker"
        async with pool.acquire() as conn:
            change = await apply_as_claimed(conn, step, outcome, settings, source=source)
        if change is None:
            async with unit_of_work(pool) as uow:
                change = await apply_payment_outcome(uow, order.id, outcome, settings, source=source)
        if change is not None:
            metrics.count_transition(change.before, change.after)
            if change.before != change.after:
                log.info("payment step applied", transition=f"{change.before}->{change.after}", outcome=outcome.kind)
        return change
