"""What the payment worker and the reconciler ask Stripe, decided without a database: create, adopt, check, end.

Whether an order is past its deadline is the database's verdict (``overdue``), passed in as the claim returns it.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from checkout import domain
from checkout.config import CheckoutSettings
from checkout.domain import Buyer, Order, PurchaseRequest, ShippingAddress
from checkout.gateway import Intent, PaymentProviderUnavailable
from checkout.usecases import payments
from tweetshop_contracts import utc_now

SETTINGS = CheckoutSettings(payment_retry_max_backoff_s=60)


def an_order(**changes: Any) -> Order:
    request = PurchaseRequest(
        tweet_id=uuid.uuid4(),
        product_id=uuid.uuid4(),
        quantity=1,
        buyer=Buyer("b", "b@example.com"),
        shipping=ShippingAddress("Ada", "1 rue", "Paris", "FR", 48.8, 2.3),
        payment_method="pm_card_visa",
    )
    price = domain.Price(uuid.uuid4(), 1200, 1200, "EUR")
    order, _ = domain.place(uuid.uuid4(), request, price, "corr", utc_now())
    return replace(order, stock_reserved=True, **changes)


# --- within the deadline ------------------------------------------------------------------


async def test_the_first_attempt_creates_an_intent_keyed_by_order_and_attempt(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class()
    order = an_order(payment_attempts=1)
    outcome = await payments.ask_stripe(gateway, order, overdue=False)
    assert outcome.kind == "paid"
    assert gateway.created == [(order.id, 1)]


async def test_a_later_attempt_adopts_the_intent_an_earlier_one_made_instead_of_charging_twice(
    fake_gateway_class: Any,
) -> None:
    order = an_order(payment_attempts=2)
    gateway = fake_gateway_class(existing={order.id: Intent("pi_old", "succeeded", None, None, str(order.id))})
    outcome = await payments.ask_stripe(gateway, order, overdue=False)
    assert (outcome.kind, outcome.payment_intent_id) == ("paid", "pi_old")
    assert gateway.created == []


async def test_a_later_attempt_creates_when_no_earlier_intent_exists(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class()
    order = an_order(payment_attempts=3)
    await payments.ask_stripe(gateway, order, overdue=False)
    assert gateway.created == [(order.id, 3)]


async def test_a_declined_card_fails_the_payment_with_stripes_message(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class(decline_with="Your card was declined.")
    outcome = await payments.ask_stripe(gateway, an_order(payment_attempts=1), overdue=False)
    assert (outcome.kind, outcome.reason) == ("failed", "Your card was declined.")


async def test_a_3ds_card_asks_the_buyer_to_authenticate(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class(create_status="requires_action")
    outcome = await payments.ask_stripe(gateway, an_order(payment_attempts=1), overdue=False)
    assert (outcome.kind, outcome.client_secret) == ("requires_action", "secret")


async def test_a_known_intent_is_checked_not_created_again(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class()
    gateway.intents["pi_7"] = Intent("pi_7", "succeeded", None, None, None)
    outcome = await payments.ask_stripe(gateway, an_order(payment_attempts=1, payment_intent_id="pi_7"), overdue=False)
    assert outcome.kind == "paid" and gateway.created == []


async def test_an_authentication_still_within_the_deadline_is_left_alone(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class()
    gateway.intents["pi_9"] = Intent("pi_9", "requires_action", "s", None, None)
    outcome = await payments.ask_stripe(
        gateway, an_order(status="requires_action", payment_intent_id="pi_9"), overdue=False
    )
    assert outcome.kind == "requires_action" and gateway.cancelled == []


async def test_stripe_being_unreachable_reaches_the_caller_to_retry_later(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class(unavailable="RateLimitError: Too many requests")
    with pytest.raises(PaymentProviderUnavailable):
        await payments.ask_stripe(gateway, an_order(payment_attempts=1), overdue=False)
    assert gateway.created == []


# --- past the deadline: end the order from Stripe's truth ---------------------------------


async def test_an_overdue_order_without_any_attempt_is_cancelled_without_asking_stripe(
    fake_gateway_class: Any,
) -> None:
    gateway = fake_gateway_class(unavailable="nobody should call Stripe")
    outcome = await payments.ask_stripe(gateway, an_order(payment_attempts=0), overdue=True)
    assert (outcome.kind, outcome.reason) == ("cancelled", domain.NOT_PAID_IN_TIME)


async def test_an_overdue_order_never_gets_a_new_payment_intent(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class()
    outcome = await payments.ask_stripe(gateway, an_order(payment_attempts=2), overdue=True)
    assert outcome.kind == "cancelled" and gateway.created == []


async def test_an_overdue_3ds_payment_is_cancelled_at_stripe_before_the_order_is(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class()
    gateway.intents["pi_8"] = Intent("pi_8", "requires_action", "s", None, None)
    late = an_order(status="requires_action", payment_intent_id="pi_8")
    outcome = await payments.ask_stripe(gateway, late, overdue=True)
    assert (outcome.kind, outcome.payment_intent_id) == ("cancelled", "pi_8")
    assert gateway.cancelled == ["pi_8"]


async def test_an_overdue_order_whose_payment_succeeded_is_paid_not_cancelled(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class()
    gateway.intents["pi_5"] = Intent("pi_5", "succeeded", None, None, None)
    outcome = await payments.ask_stripe(gateway, an_order(payment_intent_id="pi_5"), overdue=True)
    assert outcome.kind == "paid" and gateway.cancelled == []


async def test_an_overdue_order_adopts_the_intent_a_crashed_attempt_made(fake_gateway_class: Any) -> None:
    order = an_order(payment_attempts=1)
    gateway = fake_gateway_class(existing={order.id: Intent("pi_lost", "succeeded", None, None, str(order.id))})
    outcome = await payments.ask_stripe(gateway, order, overdue=True)
    assert (outcome.kind, outcome.payment_intent_id) == ("paid", "pi_lost")
    assert gateway.created == [] and gateway.cancelled == []


async def test_a_payment_that_succeeds_while_being_cancelled_pays_the_order(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class(pays_before_cancel=True)
    gateway.intents["pi_6"] = Intent("pi_6", "requires_action", "s", None, None)
    late = an_order(status="requires_action", payment_intent_id="pi_6")
    outcome = await payments.ask_stripe(gateway, late, overdue=True)
    assert (outcome.kind, outcome.payment_intent_id) == ("paid", "pi_6")


async def test_a_declined_overdue_payment_fails_the_order(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class()
    gateway.intents["pi_4"] = Intent("pi_4", "requires_payment_method", None, "Your card was declined.", None)
    outcome = await payments.ask_stripe(gateway, an_order(payment_intent_id="pi_4"), overdue=True)
    assert (outcome.kind, outcome.reason) == ("failed", "Your card was declined.")


# --- backoff ------------------------------------------------------------------------------


def test_retries_back_off_exponentially_up_to_the_maximum() -> None:
    delays = [payments.retry_delay(n, SETTINGS, jitter=0.5) for n in range(1, 10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == 60 and delays == sorted(delays)


@pytest.mark.parametrize("failures", [1, 3, 6])
def test_retries_are_spread_by_a_quarter_either_way(failures: int) -> None:
    middle = payments.retry_delay(failures, SETTINGS, jitter=0.5)
    assert payments.retry_delay(failures, SETTINGS, jitter=0.0) == pytest.approx(middle * 0.75)
    assert payments.retry_delay(failures, SETTINGS, jitter=1.0) == pytest.approx(middle * 1.25)
    assert payments.retry_delay(30, SETTINGS, jitter=1.0) == SETTINGS.payment_retry_max_backoff_s


def test_a_creation_whose_answer_was_lost_is_searched_for_no_sooner_than_a_call_may_take() -> None:
    at_least = SETTINGS.stripe_timeout_s
    assert payments.retry_delay(1, SETTINGS, jitter=0.5, at_least=at_least) == SETTINGS.stripe_timeout_s
    assert payments.retry_delay(30, SETTINGS, jitter=0.5, at_least=at_least) == 60
