"""The order state machine, pricing and refunds: pure rules, no I/O."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from checkout import access, domain
from checkout.domain import (
    ORDER_STATUSES,
    Buyer,
    CancelRefused,
    Order,
    OrderStatus,
    ProductView,
    PurchaseRefused,
    PurchaseRequest,
    RefundRefused,
    ShippingAddress,
    TransitionRefused,
    TweetView,
)
from tweetshop_contracts import OrderCancelled, OrderPaid, OrderPaymentFailed, OrderPlaced, OrderRefunded

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
PRODUCT_ID = uuid.uuid4()
MERCHANT_ID = uuid.uuid4()
TWEET_ID = uuid.uuid4()

ALLOWED: set[tuple[OrderStatus, OrderStatus]] = {
    ("pending", "requires_action"),
    ("pending", "paid"),
    ("pending", "failed"),
    ("pending", "cancelled"),
    ("requires_action", "paid"),
    ("requires_action", "failed"),
    ("requires_action", "cancelled"),
    ("paid", "refunded"),
}


def a_product(**changes: object) -> ProductView:
    product = ProductView(
        id=PRODUCT_ID,
        merchant_id=MERCHANT_ID,
        title="Mug",
        price_minor=1200,
        currency="EUR",
        stock_available=5,
        status="active",
        version=3,
    )
    return replace(product, **changes)  # type: ignore[arg-type]


def a_request(quantity: int = 2, product_id: uuid.UUID = PRODUCT_ID) -> PurchaseRequest:
    return PurchaseRequest(
        tweet_id=TWEET_ID,
        product_id=product_id,
        quantity=quantity,
        buyer=Buyer(id="buyer-1", email="ada@example.com"),
        shipping=ShippingAddress(name="Ada", line1="1 rue de Rivoli", city="Paris", country="FR", lat=48.86, lon=2.35),
        payment_method="pm_card_visa",
    )


def an_order(status: OrderStatus = "pending", **changes: object) -> Order:
    price = domain.price_purchase(a_product(), None, a_request())
    order, _ = domain.place(uuid.uuid4(), a_request(), price, "corr-1", NOW)
    return replace(order, status=status, **changes)  # type: ignore[arg-type]


def move(order: Order, target: OrderStatus) -> Order:
    """Apply the domain function that leads to ``target``."""
    if target == "requires_action":
        return domain.require_action(order, "pi_1", "pi_1_secret", NOW)
    if target == "paid":
        return domain.pay(order, "pi_1", NOW)[0]
    if target == "failed":
        return domain.fail_payment(order, "declined", "pi_1", NOW)[0]
    if target == "cancelled":
        return domain.cancel(order, "no stock", NOW)[0]
    if target == "refunded":
        return domain.refund(order, order.amount_minor - order.refunded_minor, NOW)[0]
    raise AssertionError(target)


# --- pricing and placing ---------------------------------------------------------------


def test_the_price_comes_from_catalog_unit_price_times_quantity() -> None:
    price = domain.price_purchase(a_product(price_minor=1250), None, a_request(quantity=3))
    assert (price.unit_price_minor, price.amount_minor, price.currency) == (1250, 3750, "EUR")
    assert price.merchant_id == MERCHANT_ID


def test_an_unknown_product_is_refused() -> None:
    with pytest.raises(PurchaseRefused) as refused:
        domain.price_purchase(None, None, a_request())
    assert refused.value.code == "unknown_product"


def test_a_delisted_product_is_refused() -> None:
    with pytest.raises(PurchaseRefused) as refused:
        domain.price_purchase(a_product(status="delisted"), None, a_request())
    assert refused.value.code == "product_unavailable"


def test_asking_for_more_than_is_left_says_how_many_are_left() -> None:
    with pytest.raises(PurchaseRefused) as refused:
        domain.price_purchase(a_product(stock_available=2), None, a_request(quantity=3))
    assert refused.value.code == "insufficient_stock"
    assert "only 2 left" in refused.value.message


def test_a_sold_out_product_is_refused_as_sold_out() -> None:
    with pytest.raises(PurchaseRefused) as refused:
        domain.price_purchase(a_product(stock_available=0), None, a_request(quantity=1))
    assert "sold out" in refused.value.message


def test_exactly_the_stock_left_can_be_bought() -> None:
    assert domain.price_purchase(a_product(stock_available=2), None, a_request(quantity=2)).amount_minor == 2400


def test_a_tweet_known_to_sell_another_product_is_refused() -> None:
    tweet = TweetView(tweet_id=TWEET_ID, product_id=uuid.uuid4(), merchant_id=MERCHANT_ID)
    with pytest.raises(PurchaseRefused) as refused:
        domain.price_purchase(a_product(), tweet, a_request())
    assert refused.value.code == "tweet_product_mismatch"


def test_placing_makes_a_pending_order_and_order_placed_with_the_correlation_id() -> None:
    price = domain.price_purchase(a_product(), None, a_request(quantity=2))
    order, placed = domain.place(uuid.uuid4(), a_request(quantity=2), price, "corr-42", NOW)
    assert order.status == "pending" and not order.stock_reserved
    assert isinstance(placed, OrderPlaced)
    assert placed.order_id == order.id and placed.correlation_id == "corr-42"
    assert (placed.amount_minor, placed.unit_price_minor, placed.currency, placed.quantity) == (2400, 1200, "EUR", 2)
    assert placed.buyer_id == "buyer-1" and "ada@example.com" not in placed.model_dump_json()


def test_the_same_body_gives_the_same_fingerprint_and_another_body_another() -> None:
    assert domain.request_fingerprint('{"a":1}') == domain.request_fingerprint('{"a":1}')
    assert domain.request_fingerprint('{"a":1}') != domain.request_fingerprint('{"a":2}')


# --- the state machine -----------------------------------------------------------------


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_every_allowed_transition_is_applied(current: OrderStatus, target: OrderStatus) -> None:
    moved = move(an_order(current), target)
    assert moved.status == target
    assert moved.updated_at == NOW


@pytest.mark.parametrize(
    ("current", "target"),
    [
        pair
        for pair in itertools.product(ORDER_STATUSES, ORDER_STATUSES)
        if pair not in ALLOWED and pair[1] != "pending"
    ],
)
def test_every_other_transition_is_refused(current: OrderStatus, target: OrderStatus) -> None:
    order = an_order(current)
    with pytest.raises(TransitionRefused):
        move(order, target)


def test_nothing_ever_goes_back_to_pending() -> None:
    assert not any(domain.can_transition(status, "pending") for status in ORDER_STATUSES)


@pytest.mark.parametrize("terminal", ["failed", "cancelled", "refunded"])
def test_terminal_statuses_allow_nothing(terminal: OrderStatus) -> None:
    assert not any(domain.can_transition(terminal, target) for target in ORDER_STATUSES)


def test_paying_emits_order_paid_with_the_destination_but_not_the_street() -> None:
    order = an_order("requires_action", client_secret="pi_1_secret")
    paid, event = domain.pay(order, "pi_9", NOW)
    assert paid.payment_intent_id == "pi_9" and paid.client_secret is None
    assert isinstance(event, OrderPaid)
    assert (event.amount_minor, event.currency, event.payment_intent_id) == (2400, "EUR", "pi_9")
    assert event.destination.model_dump() == {"city": "Paris", "country": "FR", "lat": 48.86, "lon": 2.35}
    assert "Rivoli" not in event.model_dump_json() and event.correlation_id == "corr-1"


def test_a_failed_payment_keeps_stripes_reason_and_asks_catalog_to_release_the_stock() -> None:
    order = an_order("pending", stock_reserved=True)
    failed, event = domain.fail_payment(order, "Your card was declined.", "pi_2", NOW)
    assert failed.failure_reason == "Your card was declined." and failed.payment_intent_id == "pi_2"
    assert isinstance(event, OrderPaymentFailed)
    assert event.stock_reserved is True and event.reason == "Your card was declined."


def test_cancelling_before_any_reservation_tells_catalog_there_is_no_stock_to_release() -> None:
    cancelled, event = domain.cancel(an_order("pending"), "only 0 left in stock", NOW)
    assert cancelled.cancel_reason == "only 0 left in stock"
    assert isinstance(event, OrderCancelled) and event.stock_reserved is False


def test_requiring_action_keeps_the_client_secret_and_emits_nothing() -> None:
    order = domain.require_action(an_order("pending", stock_reserved=True), "pi_3", "pi_3_secret_x", NOW)
    assert (order.status, order.payment_intent_id, order.client_secret) == ("requires_action", "pi_3", "pi_3_secret_x")


def test_stock_is_marked_reserved_once_and_only_while_pending() -> None:
    order = an_order("pending")
    reserved = domain.mark_stock_reserved(order)
    assert reserved.stock_reserved
    assert domain.mark_stock_reserved(reserved) is reserved
    cancelled = an_order("cancelled")
    assert domain.mark_stock_reserved(cancelled) is cancelled


def test_long_reasons_are_cut_to_fit_the_event() -> None:
    _, event = domain.fail_payment(an_order("pending"), "x" * 2000, None, NOW)
    assert len(event.reason) == domain.MAX_REASON


# --- deadline and the buyer's cancellation ----------------------------------------------


def test_a_buyer_cancels_an_order_without_any_payment_attempt_at_once() -> None:
    assert domain.plan_buyer_cancel(an_order("pending")) == "cancel_now"
    assert domain.plan_buyer_cancel(an_order("pending", stock_reserved=True)) == "cancel_now"


@pytest.mark.parametrize("status", ["pending", "requires_action"])
def test_a_buyer_cancels_an_order_with_a_payment_intent_at_stripe_first(status: OrderStatus) -> None:
    order = an_order(status, payment_attempts=1, payment_intent_id="pi_1")
    assert domain.plan_buyer_cancel(order) == "cancel_at_stripe"


def test_cancelling_while_an_attempt_may_be_creating_its_intent_is_refused_for_now() -> None:
    with pytest.raises(CancelRefused) as refused:
        domain.plan_buyer_cancel(an_order("pending", payment_attempts=1))
    assert refused.value.code == "payment_in_progress"


@pytest.mark.parametrize(
    ("status", "code"), [("paid", "order_already_paid"), ("refunded", "order_already_paid"), ("failed", "order_ended")]
)
def test_an_order_that_was_paid_or_failed_cannot_be_cancelled(status: OrderStatus, code: str) -> None:
    with pytest.raises(CancelRefused) as refused:
        domain.plan_buyer_cancel(an_order(status, payment_intent_id="pi_1"))
    assert refused.value.code == code


def test_cancelling_a_cancelled_order_again_changes_nothing() -> None:
    assert domain.plan_buyer_cancel(an_order("cancelled")) == "already_cancelled"


def test_a_buyer_cancel_after_the_reservation_tells_catalog_to_release_the_stock() -> None:
    cancelled, event = domain.cancel(an_order("pending", stock_reserved=True), domain.CANCELLED_BY_BUYER, NOW)
    assert (cancelled.status, cancelled.cancel_reason) == ("cancelled", "cancelled by the buyer")
    assert isinstance(event, OrderCancelled) and event.stock_reserved is True and event.quantity == 2


# --- refunds ---------------------------------------------------------------------------


def test_a_refund_defaults_to_all_that_is_left() -> None:
    assert domain.plan_refund(an_order("paid", refunded_minor=400), None) == 2000


def test_a_partial_refund_keeps_the_order_paid_without_restocking() -> None:
    refunded, event = domain.refund(an_order("paid"), 1000, NOW)
    assert (refunded.status, refunded.refunded_minor) == ("paid", 1000)
    assert isinstance(event, OrderRefunded)
    assert (event.amount_minor, event.refunded_total_minor, event.full, event.restock) == (1000, 1000, False, False)


def test_the_refund_that_completes_the_amount_ends_the_order_refunded_and_restocks() -> None:
    refunded, event = domain.refund(an_order("paid", refunded_minor=1000), 1400, NOW)
    assert (refunded.status, refunded.refunded_minor) == ("refunded", 2400)
    assert (event.refunded_total_minor, event.full, event.restock) == (2400, True, True)


def test_refunding_more_than_is_left_is_refused() -> None:
    with pytest.raises(RefundRefused) as refused:
        domain.plan_refund(an_order("paid", refunded_minor=2000), 401)
    assert refused.value.code == "refund_exceeds_remaining"


def test_refunds_in_flight_count_against_what_is_left() -> None:
    with pytest.raises(RefundRefused) as refused:
        domain.plan_refund(an_order("paid"), None, in_flight_minor=2400)
    assert refused.value.code == "refund_in_progress"
    assert domain.plan_refund(an_order("paid"), None, in_flight_minor=400) == 2000


@pytest.mark.parametrize("status", ["pending", "requires_action", "failed", "cancelled"])
def test_an_unpaid_order_cannot_be_refunded(status: OrderStatus) -> None:
    with pytest.raises(RefundRefused) as refused:
        domain.plan_refund(an_order(status), None)
    assert refused.value.code == "order_not_paid"


def test_a_refunded_order_cannot_be_refunded_again() -> None:
    with pytest.raises(RefundRefused) as refused:
        domain.plan_refund(an_order("refunded", refunded_minor=2400), 1)
    assert refused.value.code == "already_refunded"


# --- what Stripe's answer means ---------------------------------------------------------


@pytest.mark.parametrize(
    ("stripe_status", "kind"),
    [
        ("succeeded", "paid"),
        ("requires_action", "requires_action"),
        ("requires_payment_method", "failed"),
        ("canceled", "cancelled"),
        ("processing", "processing"),
        ("requires_capture", "processing"),
    ],
)
def test_a_payment_intent_status_maps_onto_the_order(stripe_status: str, kind: str) -> None:
    assert domain.outcome_of_intent("pi_1", stripe_status, "sec", None).kind == kind


def test_a_failed_intent_carries_stripes_message() -> None:
    outcome = domain.outcome_of_intent("pi_1", "requires_payment_method", None, "Your card was declined.")
    assert outcome.reason == "Your card was declined."


# --- access ----------------------------------------------------------------------------


def test_a_sealed_token_opens_only_with_the_same_idempotency_key_and_order() -> None:
    order_id = uuid.uuid4()
    token, _ = access.new_access_token()
    sealed = access.seal_token(token, "key-0123456789abcdef", order_id)
    assert token not in sealed
    assert access.unseal_token(sealed, "key-0123456789abcdef", order_id) == token
    assert _unseal_or_none(sealed, "another-key-0123456789", order_id) != token
    assert _unseal_or_none(sealed, "key-0123456789abcdef", uuid.uuid4()) != token


def _unseal_or_none(sealed: str, key: str, order_id: uuid.UUID) -> str | None:
    try:
        return access.unseal_token(sealed, key, order_id)
    except UnicodeDecodeError:
        return None


def test_the_tracking_url_carries_the_order_and_the_token() -> None:
    order_id = uuid.uuid4()
    assert (
        access.tracking_url("http://t.example/", order_id, "tso_a-b")
        == f"http://t.example/track/{order_id}?token=tso_a-b"
    )


@pytest.mark.parametrize(
    ("unanswered", "heard", "copy_counts", "reserved_unseen", "claimed"),
    [
        (3, 0, 0, 0, 3),  # nothing answered yet: every pending order holds its units
        (3, 0, 2, 0, 1),  # catalog reserved two, its ProductUpdated came first: only the third is claimed
        (1, 2, 2, 0, 1),  # both heard and in the copy: the third still pending
        (0, 1, 0, 0, 1),  # heard before the copy counts it: still claimed
        (0, 1, 1, 0, 0),  # in the copy: not claimed twice
        (0, 0, 1, 0, 0),  # reserved for an order cancelled before it was heard: never below zero
        (2, 0, None, 1, 3),  # a catalog older than 1.3.0: pending + reserved orders the copy's version predates
    ],
)
def test_stock_claimed_counts_what_the_copy_does_not_show_yet(
    unanswered: int, heard: int, copy_counts: int | None, reserved_unseen: int, claimed: int
) -> None:
    from checkout.repository import stock_claimed

    assert stock_claimed(unanswered, heard, copy_counts, reserved_unseen) == claimed
