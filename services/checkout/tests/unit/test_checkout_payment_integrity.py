"""Whose payment is it: an order is paid only by its own PaymentIntent, for exactly its amount, currency and mode;
and what news of an intent does to its order (``domain.decide_payment``)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from checkout import domain
from checkout.domain import IntentFacts, Order, PaymentOutcome
from checkout.gateway import Intent
from tweetshop_contracts import OrderPaid, utc_now


def an_order(**changes: Any) -> Order:
    request = domain.PurchaseRequest(
        tweet_id=uuid.uuid4(),
        product_id=uuid.uuid4(),
        quantity=2,
        buyer=domain.Buyer("b", "b@example.com"),
        shipping=domain.ShippingAddress("Ada", "1 rue", "Paris", "FR", 48.8, 2.3),
        payment_method="pm_card_visa",
    )
    order, _ = domain.place(uuid.uuid4(), request, domain.Price(uuid.uuid4(), 125_000, 250_000, "USD"), "c", utc_now())
    return replace(order, stock_reserved=True, **changes)


def facts_of(order: Order, **changes: Any) -> IntentFacts:
    """What Stripe's object of the order's own intent says: its order, its price, test mode."""
    return replace(IntentFacts(str(order.id), order.amount_minor, order.currency.lower(), False), **changes)


def paid(intent_id: str, facts: IntentFacts | None) -> PaymentOutcome:
    return PaymentOutcome("paid", intent_id, facts=facts)


WAITING = {"status": "requires_action", "payment_intent_id": "pi_own"}


def test_the_orders_own_intent_for_its_exact_price_pays_it() -> None:
    order = an_order(**WAITING)
    assert domain.payment_mismatch(order, paid("pi_own", facts_of(order)), livemode=False, may_adopt=False) is None


def test_a_cheaper_foreign_intent_naming_the_order_never_pays_it() -> None:
    """The attack: a $1 intent with metadata[order_id] of a $2,500 order waiting for 3-D Secure."""
    order = an_order(**WAITING)
    forged = paid("pi_attacker", facts_of(order, amount_minor=100))
    assert domain.payment_mismatch(order, forged, livemode=False, may_adopt=True) == "foreign_intent"
    # Even at the full price, another intent than the order's own is not its payment.
    full_price = paid("pi_attacker", facts_of(order))
    assert domain.payment_mismatch(order, full_price, livemode=False, may_adopt=True) == "foreign_intent"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount_minor": 100}, "amount"),
        ({"amount_minor": 250_001}, "amount"),
        ({"currency": "eur"}, "currency"),
        ({"livemode": True}, "livemode"),
        ({"order_id": str(uuid.uuid4())}, "other_order"),
        ({"amount_minor": None}, "unverified"),
        ({"currency": None}, "unverified"),
        ({"livemode": None}, "unverified"),
        ({"order_id": None}, "unverified"),
    ],
)
def test_the_orders_own_intent_pays_it_only_for_its_amount_currency_mode_and_order(
    change: dict[str, Any], reason: str
) -> None:
    order = an_order(**WAITING)
    outcome = paid("pi_own", facts_of(order, **change))
    assert domain.payment_mismatch(order, outcome, livemode=False, may_adopt=False) == reason


def test_a_success_without_stripes_object_is_unverified() -> None:
    order = an_order(**WAITING)
    assert domain.payment_mismatch(order, paid("pi_own", None), livemode=False, may_adopt=False) == "unverified"


def test_a_live_key_takes_only_live_payments() -> None:
    order = an_order(**WAITING)
    assert domain.payment_mismatch(order, paid("pi_own", facts_of(order)), livemode=True, may_adopt=False) == "livemode"
    live = paid("pi_own", facts_of(order, livemode=True))
    assert domain.payment_mismatch(order, live, livemode=True, may_adopt=False) is None


def test_the_currency_is_compared_without_case() -> None:
    order = an_order(**WAITING)
    outcome = paid("pi_own", facts_of(order, currency="USD"))
    assert domain.payment_mismatch(order, outcome, livemode=False, may_adopt=False) is None


def test_a_webhook_never_adopts_an_intent_the_order_has_not_recorded() -> None:
    order = an_order(payment_attempts=1)
    outcome = paid("pi_new", facts_of(order))
    assert domain.payment_mismatch(order, outcome, livemode=False, may_adopt=False) == "unrecorded_intent"
    assert domain.payment_mismatch(order, outcome, livemode=False, may_adopt=True) is None


def test_an_adopted_intent_must_match_even_when_it_did_not_pay() -> None:
    order = an_order(payment_attempts=2)
    waiting = PaymentOutcome("requires_action", "pi_found", "s", facts=facts_of(order, amount_minor=1))
    assert domain.payment_mismatch(order, waiting, livemode=False, may_adopt=True) == "amount"


def test_news_that_the_orders_own_intent_failed_needs_no_facts() -> None:
    order = an_order(**WAITING)
    failed = PaymentOutcome("failed", "pi_own", reason="declined")
    assert domain.payment_mismatch(order, failed, livemode=False, may_adopt=False) is None
    assert domain.payment_mismatch(order, PaymentOutcome("cancelled", None), livemode=False, may_adopt=False) is None


def test_stripes_object_is_read_into_the_facts() -> None:
    order_id = str(uuid.uuid4())
    intent = Intent.from_data(
        {
            "id": "pi_1",
            "status": "succeeded",
            "amount": 2500,
            "currency": "eur",
            "livemode": False,
            "metadata": {"order_id": order_id},
        }
    )
    outcome = intent.outcome()
    assert outcome.kind == "paid"
    assert outcome.facts == IntentFacts(order_id, 2500, "eur", False)


@pytest.mark.parametrize(
    "data",
    [
        {"amount": True, "currency": "eur", "livemode": False},
        {"amount": "2500", "currency": "eur", "livemode": False},
        {"amount": 2500, "currency": 978, "livemode": False},
        {"amount": 2500, "currency": "eur", "livemode": "false"},
    ],
)
def test_ill_typed_fields_of_an_intent_are_not_facts(data: dict[str, Any]) -> None:
    order = an_order(**WAITING)
    intent = Intent.from_data({"id": "pi_own", "status": "succeeded", "metadata": {"order_id": str(order.id)}, **data})
    assert domain.payment_mismatch(order, intent.outcome(), livemode=False, may_adopt=False) == "unverified"


# --- the decision: what news of an intent does to the order --------------------------------

RECHECK_S = 30.0
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NO_EVENTS: tuple[str, ...] = ()
TOKEN_SHA = "ab" * 32


@pytest.mark.parametrize(
    ("status", "recorded", "kind", "intent", "facts", "may_adopt", "expected"),
    [
        # (order status, intent recorded on it, outcome kind, outcome's intent, facts, our own step?) →
        # (status after, intent recorded after, events, reschedule, next step in, mismatch, recorded, unexpected)
        pytest.param(
            "pending", None, "paid", "pi_new", "own", True,
            ("paid", "pi_new", ("OrderPaid",), True, None, None, False, False),
            id="our-step-pays-with-the-intent-it-made",
        ),
        pytest.param(
            "requires_action", "pi_own", "paid", "pi_own", "own", False,
            ("paid", "pi_own", ("OrderPaid",), True, None, None, False, False),
            id="a-webhook-of-the-orders-own-intent-pays-it",
        ),
        pytest.param(
            "requires_action", "pi_own", "paid", "pi_own", "cheap", False,
            ("requires_action", "pi_own", NO_EVENTS, False, None, "amount", True, False),
            id="a-webhook-of-a-cheaper-payment-changes-nothing-and-is-recorded",
        ),
        pytest.param(
            "requires_action", "pi_own", "paid", "pi_own", "cheap", True,
            ("requires_action", "pi_own", NO_EVENTS, True, RECHECK_S, "amount", True, False),
            id="our-step-seeing-a-cheaper-payment-looks-again-later",
        ),
        pytest.param(
            "requires_action", "pi_own", "paid", "pi_other", "own", False,
            ("requires_action", "pi_own", NO_EVENTS, False, None, "foreign_intent", True, False),
            id="a-foreign-intent-that-paid-is-recorded",
        ),
        pytest.param(
            "requires_action", "pi_own", "failed", "pi_other", None, True,
            ("requires_action", "pi_own", NO_EVENTS, True, RECHECK_S, "foreign_intent", False, False),
            id="a-foreign-intent-that-failed-is-not-recorded",
        ),
        pytest.param(
            "pending", None, "paid", "pi_new", "own", False,
            ("pending", None, NO_EVENTS, False, None, "unrecorded_intent", True, False),
            id="a-webhook-never-adopts-an-intent",
        ),
        pytest.param(
            "pending", None, "failed", "pi_new", None, True,
            ("failed", "pi_new", ("OrderPaymentFailed",), True, None, None, False, False),
            id="a-declined-card-fails-the-order",
        ),
        pytest.param(
            "pending", None, "failed", None, None, True,
            ("failed", None, ("OrderPaymentFailed",), True, None, None, False, False),
            id="a-card-declined-before-any-intent-fails-the-order",
        ),
        pytest.param(
            "requires_action", "pi_own", "cancelled", "pi_own", None, True,
            ("cancelled", "pi_own", ("OrderCancelled",), True, None, None, False, False),
            id="a-cancelled-intent-cancels-the-order",
        ),
        pytest.param(
            "pending", None, "cancelled", None, None, True,
            ("cancelled", None, ("OrderCancelled",), True, None, None, False, False),
            id="an-overdue-order-without-an-intent-is-cancelled",
        ),
        pytest.param(
            "pending", None, "requires_action", "pi_new", None, True,
            ("requires_action", "pi_new", NO_EVENTS, True, RECHECK_S, None, False, False),
            id="3-d-secure-waits-for-the-buyer-and-is-looked-at-again",
        ),
        pytest.param(
            "requires_action", "pi_own", "requires_action", "pi_own", None, True,
            ("requires_action", "pi_own", NO_EVENTS, True, RECHECK_S, None, False, False),
            id="still-waiting-for-3-d-secure",
        ),
        pytest.param(
            "pending", None, "processing", "pi_new", None, True,
            ("pending", "pi_new", NO_EVENTS, True, RECHECK_S, None, False, False),
            id="processing-records-the-intent-and-looks-again",
        ),
        pytest.param(
            "failed", "pi_own", "paid", "pi_own", "own", False,
            ("failed", "pi_own", NO_EVENTS, True, None, None, False, True),
            id="a-payment-for-a-failed-order-is-unexpected",
        ),
        pytest.param(
            "cancelled", None, "paid", "pi_late", "own", True,
            ("cancelled", "pi_late", NO_EVENTS, True, None, None, False, True),
            id="a-payment-for-a-cancelled-order-is-unexpected-and-its-intent-kept",
        ),
        pytest.param(
            "paid", "pi_own", "paid", "pi_own", "own", False,
            ("paid", "pi_own", NO_EVENTS, True, None, None, False, False),
            id="whoever-comes-second-changes-nothing",
        ),
    ],
)  # fmt: skip
def test_what_news_of_an_intent_does_to_the_order(
    status: domain.OrderStatus,
    recorded: str | None,
    kind: domain.OutcomeKind,
    intent: str | None,
    facts: str | None,
    may_adopt: bool,
    expected: tuple[Any, ...],
) -> None:
    order = an_order(status=status, payment_intent_id=recorded, payment_attempts=1)
    said = {"own": facts_of(order), "cheap": facts_of(order, amount_minor=100), None: None}[facts]
    outcome = PaymentOutcome(kind, intent, client_secret="s", reason="why", facts=said)

    decision = domain.decide_payment(
        order, outcome, livemode=False, may_adopt=may_adopt, recheck_s=RECHECK_S, now=NOW, buyer_access_sha256=TOKEN_SHA
    )

    assert (
        decision.order.status,
        decision.order.payment_intent_id,
        tuple(event.event_type for event in decision.events),
        decision.reschedule,
        decision.next_step_in,
        decision.mismatch,
        decision.record_mismatch,
        decision.unexpected_payment,
    ) == expected
    if decision.mismatch is not None or decision.order.status == status:
        assert decision.order.updated_at == order.updated_at  # nothing moved
    else:
        assert decision.order.updated_at == NOW


def test_the_paid_event_carries_the_buyers_token_hash_and_the_payment() -> None:
    order = an_order(**WAITING)
    decision = domain.decide_payment(
        order, paid("pi_own", facts_of(order)), livemode=False, may_adopt=False, recheck_s=1, now=NOW,
        buyer_access_sha256=TOKEN_SHA,
    )  # fmt: skip
    (event,) = decision.events
    assert isinstance(event, OrderPaid)
    assert (event.payment_intent_id, event.buyer_access_sha256, event.amount_minor) == ("pi_own", TOKEN_SHA, 250_000)


def test_an_answer_from_stripe_ends_the_outage_backoff() -> None:
    order = an_order(payment_retries=4)
    waiting = PaymentOutcome("processing", "pi_new")
    decision = domain.decide_payment(order, waiting, livemode=False, may_adopt=True, recheck_s=1, now=NOW)
    assert decision.order.payment_retries == 0


def test_a_mismatch_leaves_the_order_exactly_as_it_was() -> None:
    order = an_order(payment_retries=2, **WAITING)
    forged = paid("pi_attacker", facts_of(order, amount_minor=100))
    decision = domain.decide_payment(order, forged, livemode=False, may_adopt=True, recheck_s=1, now=NOW)
    assert decision.order is order and decision.events == ()
