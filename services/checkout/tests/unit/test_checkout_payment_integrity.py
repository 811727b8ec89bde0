"""Whose payment is it: an order is paid only by its own PaymentIntent, for exactly its amount, currency and mode."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from checkout import domain
from checkout.domain import IntentFacts, Order, PaymentOutcome
from checkout.gateway import Intent
from tweetshop_contracts import utc_now


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
