"""Checkout rules: what a purchase costs, the order state machine, refunds. Pure, no I/O.

Order statuses and the only moves between them::

    pending ──▶ requires_action ──▶ paid ──▶ refunded
       │              │               ▲
       ├──────────────┼───────────────┘
       ├──▶ failed ◀──┤
       └──▶ cancelled ◀┘

``failed``, ``cancelled`` and ``refunded`` are terminal. An order still waiting
for its payment at its deadline ends from Stripe's truth (paid, failed, or
cancelled once its PaymentIntent is cancelled); a buyer may cancel an order
that is not paid yet (``plan_buyer_cancel``). A partial refund keeps
the order ``paid`` and adds to ``refunded_minor``; the refund that brings the
total to the amount paid moves it to ``refunded``. What news of a PaymentIntent
does to an order is ``decide_payment``. Every move that other
services care about returns its event (contract v1); ``requires_action`` has no
event because no other service acts on it.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from tweetshop_contracts import (
    Destination,
    Envelope,
    OrderCancelled,
    OrderPaid,
    OrderPaymentFailed,
    OrderPlaced,
    OrderRefunded,
)

PRODUCER = "checkout"
MAX_REASON = 500

OrderStatus = Literal["pending", "requires_action", "paid", "failed", "cancelled", "refunded"]
ORDER_STATUSES: tuple[OrderStatus, ...] = ("pending", "requires_action", "paid", "failed", "cancelled", "refunded")

ALLOWED_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    "pending": frozenset({"requires_action", "paid", "failed", "cancelled"}),
    "requires_action": frozenset({"paid", "failed", "cancelled"}),
    "paid": frozenset({"refunded"}),
    "failed": frozenset(),
    "cancelled": frozenset(),
    "refunded": frozenset(),
}
# Orders whose payment is still open: the payment worker and Stripe's webhooks may move them.
AWAITING_PAYMENT: frozenset[OrderStatus] = frozenset({"pending", "requires_action"})


class TransitionRefused(Exception):
    """The order cannot move from its status to the one asked."""

    def __init__(self, current: OrderStatus, target: OrderStatus) -> None:
        super().__init__(f"an order that is {current} cannot become {target}")
        self.current = current
        self.target = target


class PurchaseRefused(Exception):
    """The purchase cannot be placed as asked; ``code`` names why, the message is for the buyer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RefundRefused(Exception):
    """The refund cannot be made as asked; ``code`` names why, the message is for the caller."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ProductView:
    """What checkout knows about a product, from catalog.products.v1."""

    id: uuid.UUID
    merchant_id: uuid.UUID
    title: str
    price_minor: int
    currency: str
    stock_available: int
    status: Literal["active", "delisted"]
    version: int
    # Catalog's count of units ever reserved, as of ``version`` (None from a catalog older than contract 1.3.0).
    units_reserved_total: int | None = None


@dataclass(frozen=True)
class TweetView:
    """A buyable tweet and the product it carries, from feed.buyable-tweets.v1."""

    tweet_id: uuid.UUID
    product_id: uuid.UUID
    merchant_id: uuid.UUID


@dataclass(frozen=True)
class Buyer:
    id: str
    email: str


@dataclass(frozen=True)
class ShippingAddress:
    name: str
    line1: str
    city: str
    country: str
    lat: float
    lon: float

    def destination(self) -> Destination:
        """Only what tracking needs: no name, no street."""
        return Destination(city=self.city, country=self.country, lat=self.lat, lon=self.lon)


@dataclass(frozen=True)
class PurchaseRequest:
    """A buyer's validated request to buy (the body of POST /orders)."""

    tweet_id: uuid.UUID
    product_id: uuid.UUID
    quantity: int
    buyer: Buyer
    shipping: ShippingAddress
    payment_method: str
    # Saved cards (checkout.cards): keep the card on the buyer's Stripe Customer once paid, and the Customer the
    # PaymentIntent is made for (checked at Stripe before the order is placed; None: no Customer).
    save_card: bool = False
    payment_customer: str | None = None


@dataclass(frozen=True)
class Price:
    merchant_id: uuid.UUID
    unit_price_minor: int
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class Order:
    id: uuid.UUID
    tweet_id: uuid.UUID
    product_id: uuid.UUID
    merchant_id: uuid.UUID
    quantity: int
    buyer: Buyer
    shipping: ShippingAddress
    payment_method: str
    unit_price_minor: int
    amount_minor: int
    currency: str
    status: OrderStatus
    correlation_id: str
    created_at: datetime
    updated_at: datetime
    stock_reserved: bool = False
    payment_attempts: int = 0
    payment_retries: int = 0
    payment_intent_id: str | None = None
    client_secret: str | None = None
    failure_reason: str | None = None
    cancel_reason: str | None = None
    refunded_minor: int = 0
    shipment_id: uuid.UUID | None = None
    shipment_status: str | None = None
    # The Stripe Customer its PaymentIntent is made for, and whether the card is kept on it (checkout.cards).
    payment_customer: str | None = None
    save_card: bool = False

    @property
    def refundable_minor(self) -> int:
        """What can still go back to the buyer (refunds in flight aside)."""
        return self.amount_minor - self.refunded_minor if self.status == "paid" else 0


# --- placing an order ------------------------------------------------------------------


def price_purchase(product: ProductView | None, tweet: TweetView | None, request: PurchaseRequest) -> Price:
    """Price the purchase from what catalog published, or raise PurchaseRefused.

    The price and currency come from catalog, never from the buyer. The stock
    check is advisory (catalog reserves for real), but it refuses what is known
    to be impossible before anything is written or charged.
    """
    if product is None or product.id != request.product_id:
        raise PurchaseRefused("unknown_product", f"no product {request.product_id} is on sale")
    if tweet is not None and tweet.product_id != product.id:
        raise PurchaseRefused("tweet_product_mismatch", f"tweet {tweet.tweet_id} does not sell product {product.id}")
    if product.status != "active":
        raise PurchaseRefused("product_unavailable", f"{product.title!r} is no longer on sale")
    if request.quantity > product.stock_available:
        if product.stock_available == 0:
            raise PurchaseRefused("insufficient_stock", f"{product.title!r} is sold out")
        raise PurchaseRefused(
            "insufficient_stock", f"only {product.stock_available} left of {product.title!r}, {request.quantity} asked"
        )
    return Price(
        merchant_id=product.merchant_id,
        unit_price_minor=product.price_minor,
        amount_minor=product.price_minor * request.quantity,
        currency=product.currency,
    )


def place(
    order_id: uuid.UUID, request: PurchaseRequest, price: Price, correlation_id: str, now: datetime
) -> tuple[Order, OrderPlaced]:
    """A new pending order and the event that asks catalog to reserve its stock."""
    order = Order(
        id=order_id,
        tweet_id=request.tweet_id,
        product_id=request.product_id,
        merchant_id=price.merchant_id,
        quantity=request.quantity,
        buyer=request.buyer,
        shipping=request.shipping,
        payment_method=request.payment_method,
        unit_price_minor=price.unit_price_minor,
        amount_minor=price.amount_minor,
        currency=price.currency,
        status="pending",
        correlation_id=correlation_id,
        created_at=now,
        updated_at=now,
        payment_customer=request.payment_customer,
        save_card=request.save_card,
    )
    event = OrderPlaced(
        producer=PRODUCER,
        correlation_id=correlation_id,
        order_id=order.id,
        product_id=order.product_id,
        quantity=order.quantity,
        tweet_id=order.tweet_id,
        buyer_id=order.buyer.id,
        amount_minor=order.amount_minor,
        currency=order.currency,
        unit_price_minor=order.unit_price_minor,
    )
    return order, event


def reserved_from_allocation(order: Order, placed: OrderPlaced, generation: int) -> tuple[Order, OrderPlaced]:
    """The order's units came from checkout's allocation (catalog.allocations.v1): it is reserved, due for payment
    now, and its OrderPlaced tells catalog to record the reservation rather than decide it."""
    return replace(order, stock_reserved=True), placed.model_copy(update={"allocation_generation": generation})


def request_fingerprint(canonical_body: str) -> str:
    """What makes two requests with the same Idempotency-Key "the same request"."""
    return hashlib.sha256(canonical_body.encode()).hexdigest()


# --- the state machine -----------------------------------------------------------------


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    """Whether the state machine allows ``current`` → ``target``."""
    return target in ALLOWED_TRANSITIONS[current]


def _move(order: Order, target: OrderStatus, now: datetime, **changes: object) -> Order:
    if not can_transition(order.status, target):
        raise TransitionRefused(order.status, target)
    return replace(order, status=target, updated_at=now, **changes)  # type: ignore[arg-type]


def _reason(text: str) -> str:
    return (text.strip() or "no reason given")[:MAX_REASON]


def mark_stock_reserved(order: Order) -> Order:
    """Catalog set the stock aside: the order may now be charged (once; later answers change nothing)."""
    if order.status != "pending" or order.stock_reserved:
        return order
    return replace(order, stock_reserved=True)


def require_action(order: Order, payment_intent_id: str, client_secret: str | None, now: datetime) -> Order:
    """The bank wants the buyer to authenticate (3-D Secure) before it pays."""
    return _move(order, "requires_action", now, payment_intent_id=payment_intent_id, client_secret=client_secret)


def pay(
    order: Order, payment_intent_id: str, now: datetime, buyer_access_sha256: str | None = None
) -> tuple[Order, OrderPaid]:
    """The payment succeeded: tracking ships the order (and lets the holder of the order's token follow it)."""
    paid = _move(order, "paid", now, payment_intent_id=payment_intent_id, client_secret=None)
    event = OrderPaid(
        producer=PRODUCER,
        correlation_id=order.correlation_id,
        order_id=order.id,
        product_id=order.product_id,
        quantity=order.quantity,
        amount_minor=order.amount_minor,
        currency=order.currency,
        payment_intent_id=payment_intent_id,
        destination=order.shipping.destination(),
        buyer_access_sha256=buyer_access_sha256,
    )
    return paid, event


def fail_payment(
    order: Order, reason: str, payment_intent_id: str | None, now: datetime
) -> tuple[Order, OrderPaymentFailed]:
    """The payment failed for good: catalog releases the stock it reserved."""
    failed = _move(
        order,
        "failed",
        now,
        failure_reason=_reason(reason),
        payment_intent_id=payment_intent_id or order.payment_intent_id,
        client_secret=None,
    )
    event = OrderPaymentFailed(
        producer=PRODUCER,
        correlation_id=order.correlation_id,
        order_id=order.id,
        product_id=order.product_id,
        quantity=order.quantity,
        reason=_reason(reason),
        stock_reserved=order.stock_reserved,
    )
    return failed, event


def cancel(order: Order, reason: str, now: datetime) -> tuple[Order, OrderCancelled]:
    """The order ends unpaid (stock rejected, or the buyer never finished paying)."""
    cancelled = _move(order, "cancelled", now, cancel_reason=_reason(reason), client_secret=None)
    event = OrderCancelled(
        producer=PRODUCER,
        correlation_id=order.correlation_id,
        order_id=order.id,
        product_id=order.product_id,
        quantity=order.quantity,
        reason=_reason(reason),
        stock_reserved=order.stock_reserved,
    )
    return cancelled, event


# --- deadline and cancellation ---------------------------------------------------------

NOT_PAID_IN_TIME = "the order was not paid in time"
CANCELLED_BY_BUYER = "cancelled by the buyer"


CancelPlan = Literal["already_cancelled", "cancel_now", "cancel_at_stripe"]


class CancelRefused(Exception):
    """The buyer cannot cancel the order (any more, or right now); ``code`` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def plan_buyer_cancel(order: Order) -> CancelPlan:
    """How a buyer's cancellation goes, or CancelRefused: only an order not paid yet can be cancelled.

    Without any payment attempt nothing can be charged: the order is cancelled at
    once. With a known PaymentIntent it is cancelled at Stripe first (Stripe
    refuses if the payment just succeeded). An attempt whose PaymentIntent is not
    known yet is being made right now: cancelling then could race the charge.
    """
    if order.status == "cancelled":
        return "already_cancelled"
    if order.status in ("paid", "refunded"):
        raise CancelRefused("order_already_paid", "the order is paid; ask for a refund instead of cancelling")
    if order.status == "failed":
        raise CancelRefused("order_ended", "the payment failed: there is nothing left to cancel")
    if order.payment_intent_id is not None:
        return "cancel_at_stripe"
    if order.payment_attempts == 0:
        return "cancel_now"
    raise CancelRefused("payment_in_progress", "the payment is being processed right now; try again in a few seconds")


# --- refunds ---------------------------------------------------------------------------


def plan_refund(order: Order, requested_minor: int | None, in_flight_minor: int = 0) -> int:
    """The amount to refund now (default: all that is left), or RefundRefused."""
    if order.status == "refunded":
        raise RefundRefused("already_refunded", "the order was already refunded in full")
    if order.status != "paid":
        raise RefundRefused("order_not_paid", f"only a paid order can be refunded; this one is {order.status}")
    remaining = order.refundable_minor - in_flight_minor
    if remaining <= 0:
        raise RefundRefused("refund_in_progress", "the rest of the amount is already being refunded")
    amount = remaining if requested_minor is None else requested_minor
    if amount <= 0:
        raise RefundRefused("invalid_refund_amount", "a refund must be at least 1 minor unit")
    if amount > remaining:
        raise RefundRefused(
            "refund_exceeds_remaining", f"at most {remaining} {order.currency} minor units can still be refunded"
        )
    return amount


def refund(order: Order, amount_minor: int, now: datetime) -> tuple[Order, OrderRefunded]:
    """Money went back to the buyer; the refund that completes the amount ends the order as ``refunded``."""
    if order.status != "paid":
        raise TransitionRefused(order.status, "refunded")
    if not 0 < amount_minor <= order.refundable_minor:
        raise RefundRefused("refund_exceeds_remaining", f"at most {order.refundable_minor} can still be refunded")
    total = order.refunded_minor + amount_minor
    full = total == order.amount_minor
    updated = _move(order, "refunded", now, refunded_minor=total) if full else replace(order, refunded_minor=total)
    event = OrderRefunded(
        producer=PRODUCER,
        correlation_id=order.correlation_id,
        order_id=order.id,
        product_id=order.product_id,
        quantity=order.quantity,
        amount_minor=amount_minor,
        refunded_total_minor=total,
        currency=order.currency,
        full=full,
        # Goods come back only with a full refund; a partial one is a discount and keeps them sold.
        restock=full,
    )
    return updated, event


# --- what a PaymentIntent's state means for the order ----------------------------------

OutcomeKind = Literal["paid", "requires_action", "failed", "processing", "cancelled"]


@dataclass(frozen=True)
class IntentFacts:
    """What a PaymentIntent says it is for and charges, as Stripe's own object says (None: not said)."""

    order_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    livemode: bool | None = None


@dataclass(frozen=True)
class PaymentOutcome:
    """Where a PaymentIntent leaves the order; ``facts``: what the intent charges, when Stripe's object was seen."""

    kind: OutcomeKind
    payment_intent_id: str | None
    client_secret: str | None = None
    reason: str | None = None
    facts: IntentFacts | None = None


def outcome_of_intent(
    payment_intent_id: str,
    status: str,
    client_secret: str | None,
    error_message: str | None,
    *,
    facts: IntentFacts | None = None,
) -> PaymentOutcome:
    """Map a Stripe PaymentIntent status onto the order (automatic capture, confirmed at creation)."""
    if status == "succeeded":
        return PaymentOutcome("paid", payment_intent_id, facts=facts)
    if status == "requires_action":
        return PaymentOutcome("requires_action", payment_intent_id, client_secret=client_secret, facts=facts)
    if status == "requires_payment_method":
        # A confirmed intent back at "requires_payment_method" means the attempt failed (declined, 3-D Secure failed).
        return PaymentOutcome(
            "failed", payment_intent_id, reason=error_message or "the payment was declined", facts=facts
        )
    if status == "canceled":
        # Cancelled at Stripe (by us at the deadline or for the buyer, or by hand): it can never be paid.
        return PaymentOutcome("cancelled", payment_intent_id, reason="the payment was cancelled", facts=facts)
    # processing, requires_capture, requires_confirmation: not decided yet; look again later.
    return PaymentOutcome("processing", payment_intent_id, facts=facts)


# --- whose payment is it: an order is paid only by its own intent, for its own price -----

MismatchReason = Literal[
    "foreign_intent", "unrecorded_intent", "other_order", "unverified", "amount", "currency", "livemode"
]


def payment_mismatch(
    order: Order, outcome: PaymentOutcome, *, livemode: bool, may_adopt: bool
) -> MismatchReason | None:
    """Why news of a PaymentIntent may not move ``order``, or None when it may.

    An intent is the order's own when it is the one recorded on the order, or, while none is
    recorded, one our own payment step created or found again (``may_adopt``; a webhook
    never adopts: the payment step that is creating the intent records it). News that the
    intent failed or is waiting needs no more than that. A success must also come with
    Stripe's own object (``facts``) naming this order and charging exactly the order's
    amount and currency, in the mode of our API key: a payment of $1 never pays $2,500.
    """
    intent_id = outcome.payment_intent_id
    if intent_id is None:
        return None  # nothing was made at Stripe (an order ended before any intent)
    if order.payment_intent_id is not None and intent_id != order.payment_intent_id:
        return "foreign_intent"
    if order.payment_intent_id is None and not may_adopt:
        return "unrecorded_intent"
    facts = outcome.facts
    if outcome.kind != "paid" and (facts is None or order.payment_intent_id is not None):
        return None  # our own intent's news (or what our own call was answered) that it did not pay
    if facts is None or None in (facts.order_id, facts.amount_minor, facts.currency, facts.livemode):
        return "unverified"
    if facts.order_id != str(order.id):
        return "other_order"
    if facts.amount_minor != order.amount_minor:
        return "amount"
    if (facts.currency or "").lower() != order.currency.lower():
        return "currency"
    if facts.livemode != livemode:
        return "livemode"
    return None


# --- what news of a PaymentIntent does to its order ------------------------------------


@dataclass(frozen=True)
class PaymentDecision:
    """What to do with news of a PaymentIntent, decided under the order's row lock (``decide_payment``).

    ``order``: the order to save (the one given when it does not change). ``events``: to publish with it.
    ``reschedule``: whether the order's next payment step is set, to ``next_step_in`` seconds from now
    (None: never again); when False the schedule is left as it is. ``mismatch``: why the news may not move
    the order, then ``record_mismatch``: it is kept for an operator. ``unexpected_payment``: a payment
    succeeded for an order that had ended (it needs a refund by hand).
    """

    order: Order
    events: tuple[Envelope, ...] = ()
    reschedule: bool = True
    next_step_in: float | None = None
    mismatch: MismatchReason | None = None
    record_mismatch: bool = False
    unexpected_payment: bool = False


def decide_payment(
    order: Order,
    outcome: PaymentOutcome,
    *,
    livemode: bool,
    may_adopt: bool,
    recheck_s: float,
    now: datetime,
    buyer_access_sha256: str | None = None,
) -> PaymentDecision:
    """Move the order as its PaymentIntent says, once: whoever comes second finds it moved and changes nothing.

    Only the order's own intent moves it, and a success only for its exact amount, currency and mode
    (``payment_mismatch``); other news is a mismatch, recorded (news that another intent failed or waits is
    not: only the order's own intent matters to it) and changing nothing. ``may_adopt``: the news is our own
    payment step's (the worker, the reconciler, the buyer's cancellation), not a webhook's: it may adopt the
    intent it made, and an order whose payment is still open is looked at again in ``recheck_s``.
    Undecided intents (3-D Secure, processing) are looked at again in ``recheck_s`` too.
    """
    mismatch = payment_mismatch(order, outcome, livemode=livemode, may_adopt=may_adopt)
    if mismatch is not None:
        look_again = order.status in AWAITING_PAYMENT and may_adopt  # later, not in a loop
        return PaymentDecision(
            order,
            reschedule=look_again,
            next_step_in=recheck_s if look_again else None,
            mismatch=mismatch,
            record_mismatch=outcome.kind == "paid" or mismatch != "foreign_intent",
        )
    if order.status not in AWAITING_PAYMENT:
        adopted = order
        if order.payment_intent_id is None and outcome.payment_intent_id is not None:
            adopted = replace(order, payment_intent_id=outcome.payment_intent_id)
        unexpected = outcome.kind == "paid" and order.status in ("failed", "cancelled")
        return PaymentDecision(adopted, next_step_in=None, unexpected_payment=unexpected)

    events: tuple[Envelope, ...] = ()
    next_step_in: float | None = None
    updated = order
    if outcome.kind == "paid" and outcome.payment_intent_id:
        updated, paid = pay(order, outcome.payment_intent_id, now, buyer_access_sha256=buyer_access_sha256)
        events = (paid,)
    elif outcome.kind == "failed":
        updated, failed = fail_payment(order, outcome.reason or "the payment failed", outcome.payment_intent_id, now)
        events = (failed,)
    elif outcome.kind == "cancelled":
        updated, cancelled = cancel(order, outcome.reason or "the payment was not completed", now)
        events = (cancelled,)
    elif outcome.kind == "requires_action" and outcome.payment_intent_id:
        if order.status != "requires_action":
            updated = require_action(order, outcome.payment_intent_id, outcome.client_secret, now)
        next_step_in = recheck_s
    else:  # processing: Stripe has not decided yet
        updated = replace(order, payment_intent_id=outcome.payment_intent_id or order.payment_intent_id)
        next_step_in = recheck_s
    if updated.payment_retries:
        updated = replace(updated, payment_retries=0)  # Stripe answered: the outage backoff starts over
    return PaymentDecision(updated, events, next_step_in=next_step_in)
