"""Stripe's webhooks: each verified event applied once, as news of the order's own PaymentIntent."""

from __future__ import annotations

import uuid

import asyncpg
from tweetshop_platform.errors import DomainError
from tweetshop_platform.uow import unit_of_work

from .. import metrics, repository
from ..config import CheckoutSettings
from ..domain import AWAITING_PAYMENT
from ..gateway import Intent, PaymentDeclined, PaymentGateway, PaymentProviderUnavailable
from .payments import apply_payment_outcome

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
    if recorded_intent is None and status in AWAITING_PAYMENT:
        return "deferred"  # the payment step creating this order's intent records it (or finds it after a crash)
    if recorded_intent is None and kind != "paid":
        return "no_change"  # the order ended without an intent: news that some intent did not pay changes nothing
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
        # A foreign intent claims the order, or a payment names an order that ended without one: recorded as a
        # mismatch (money may have to go back by hand), never applied.
        outcome = said.outcome()
    async with unit_of_work(pool) as uow:
        if not await repository.record_stripe_event(uow.conn, event_id, event_type, order_id):
            return "duplicate"
        change = await apply_payment_outcome(uow, order_id, outcome, settings, source="webhook")
    if change is None:
        return "not_ours"
    metrics.count_transition(change.before, change.after)
    if change.mismatch is not None:
        return "mismatch"
    return "applied" if change.before != change.after else "no_change"
