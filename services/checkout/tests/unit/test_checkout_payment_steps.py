"""What the payment worker asks Stripe, decided without a database: create, adopt, check, give up."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

from checkout import domain, service
from checkout.config import CheckoutSettings
from checkout.domain import Buyer, Order, PurchaseRequest, ShippingAddress
from checkout.gateway import Intent
from tweetshop_contracts import utc_now

SETTINGS = CheckoutSettings(payment_action_timeout_s=600, payment_retry_max_backoff_s=60)


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


async def test_the_first_attempt_creates_an_intent_keyed_by_order_and_attempt(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class()
    order = an_order(payment_attempts=1)
    outcome = await service._ask_stripe(gateway, SETTINGS, order)
    assert outcome.kind == "paid"
    assert gateway.created == [(order.id, 1)]


async def test_a_later_attempt_adopts_the_intent_an_earlier_one_made_instead_of_charging_twice(
    fake_gateway_class: Any,
) -> None:
    order = an_order(payment_attempts=2)
    gateway = fake_gateway_class(existing={order.id: Intent("pi_old", "succeeded", None, None, str(order.id))})
    outcome = await service._ask_stripe(gateway, SETTINGS, order)
    assert (outcome.kind, outcome.payment_intent_id) == ("paid", "pi_old")
    assert gateway.created == []


async def test_a_later_attempt_creates_when_no_earlier_intent_exists(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class()
    order = an_order(payment_attempts=3)
    await service._ask_stripe(gateway, SETTINGS, order)
    assert gateway.created == [(order.id, 3)]


async def test_a_declined_card_fails_the_payment_with_stripes_message(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class(decline_with="Your card was declined.")
    outcome = await service._ask_stripe(gateway, SETTINGS, an_order(payment_attempts=1))
    assert (outcome.kind, outcome.reason) == ("failed", "Your card was declined.")


async def test_a_3ds_card_asks_the_buyer_to_authenticate(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class(create_status="requires_action")
    outcome = await service._ask_stripe(gateway, SETTINGS, an_order(payment_attempts=1))
    assert (outcome.kind, outcome.client_secret) == ("requires_action", "secret")


async def test_a_known_intent_is_checked_not_created_again(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class()
    gateway.intents["pi_7"] = Intent("pi_7", "succeeded", None, None, None)
    outcome = await service._ask_stripe(gateway, SETTINGS, an_order(payment_attempts=1, payment_intent_id="pi_7"))
    assert outcome.kind == "paid" and gateway.created == []


async def test_an_authentication_never_finished_in_time_is_cancelled(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class()
    gateway.intents["pi_8"] = Intent("pi_8", "requires_action", "s", None, None)
    late = an_order(status="requires_action", payment_intent_id="pi_8", created_at=utc_now() - timedelta(seconds=601))
    outcome = await service._ask_stripe(gateway, SETTINGS, late)
    assert outcome.kind == "cancelled" and gateway.cancelled == ["pi_8"]


async def test_an_authentication_still_within_time_is_left_alone(fake_gateway_class: Any) -> None:
    gateway = fake_gateway_class()
    gateway.intents["pi_9"] = Intent("pi_9", "requires_action", "s", None, None)
    outcome = await service._ask_stripe(gateway, SETTINGS, an_order(status="requires_action", payment_intent_id="pi_9"))
    assert outcome.kind == "requires_action" and gateway.cancelled == []


def test_retries_back_off_exponentially_up_to_the_maximum() -> None:
    delays = [service.retry_delay(n, SETTINGS) for n in range(1, 10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == 60 and delays == sorted(delays)
