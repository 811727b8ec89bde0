"""Saved cards' rules: whose a PaymentMethod is (asked of Stripe, never the client), and what is kept of a card."""

from __future__ import annotations

from typing import Any

import pytest
from checkout import cards
from checkout.api import OrderIn


@pytest.mark.parametrize(
    ("pm_customer", "buyer_customer", "expected"),
    [
        (None, None, "fresh"),
        (None, "cus_A", "fresh"),
        ("cus_A", "cus_A", "saved"),
        ("cus_B", "cus_A", "foreign"),
        ("cus_B", None, "foreign"),  # a buyer without a Customer has no saved card: any attached one is another's
    ],
)
def test_ownership_is_decided_by_the_customer_stripe_names(
    pm_customer: str | None, buyer_customer: str | None, expected: str
) -> None:
    assert cards.ownership(pm_customer, buyer_customer) == expected


def test_a_card_is_read_as_brand_last_four_and_expiry_only() -> None:
    facts = cards.facts_of(
        {
            "id": "pm_1",
            "type": "card",
            "customer": {"id": "cus_A"},
            "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2031, "fingerprint": "f"},
        }
    )
    assert facts == cards.PaymentMethodFacts("pm_1", "cus_A", cards.SavedCard("pm_1", "visa", "4242", 12, 2031))


@pytest.mark.parametrize(
    "data",
    [
        {"id": "pm_2", "type": "sepa_debit", "customer": None},
        {"id": "pm_3", "type": "card", "customer": 7, "card": None},
    ],
)
def test_what_is_not_a_card_or_names_no_customer_is_read_as_such(data: dict[str, Any]) -> None:
    facts = cards.facts_of(data)
    assert facts.card is None and facts.customer is None


def test_odd_card_fields_do_not_pass_as_numbers() -> None:
    facts = cards.facts_of({"id": "pm_4", "type": "card", "card": {"exp_month": True, "exp_year": "2031"}})
    assert facts.card == cards.SavedCard("pm_4", "card", "", 0, 0)


def test_every_attempt_at_a_buyers_customer_uses_the_same_idempotency_key() -> None:
    buyer = "ba_" + "0" * 32
    assert cards.customer_idempotency_key(buyer) == cards.customer_idempotency_key(buyer)
    assert cards.customer_idempotency_key(buyer) != cards.customer_idempotency_key("ba_" + "1" * 32)


def _body(**extra: Any) -> dict[str, Any]:
    return {
        "tweet_id": "0f8e4c2a-2d1e-4c57-9d0c-7d3f0b8a1e55",
        "product_id": "0f8e4c2a-2d1e-4c57-9d0c-7d3f0b8a1e56",
        "quantity": 1,
        "buyer": {"id": "b1", "email": "a@b.co"},
        "shipping": {"name": "A", "line1": "1", "city": "Paris", "country": "FR", "lat": 1.0, "lon": 2.0},
        "payment_method": "pm_card_visa",
        **extra,
    }


def test_save_card_is_optional_and_leaves_an_order_from_before_saved_cards_the_same_request() -> None:
    without = OrderIn.model_validate(_body())
    unsaved = OrderIn.model_validate(_body(save_card=False))
    saved = OrderIn.model_validate(_body(save_card=True))
    assert without.canonical() == unsaved.canonical() and "save_card" not in without.canonical()
    assert saved.canonical() != without.canonical()
    assert saved.to_request().save_card and not without.to_request().save_card


@pytest.mark.parametrize("value", ["true", 1, None])
def test_save_card_is_a_json_boolean(value: Any) -> None:
    with pytest.raises(ValueError, match="save_card"):
        OrderIn.model_validate(_body(save_card=value))


@pytest.mark.parametrize("token", ["pm_card_visa", "pm_card_threeDSecure2Required", "pm_card_visa_chargeDeclined"])
def test_stripes_test_tokens_are_never_a_saved_card(token: str) -> None:
    """Each use of a test token is a new card at Stripe: orders that saved one do not make it anyone's."""
    assert not cards.may_be_saved(token)


@pytest.mark.parametrize("payment_method", ["pm_1Q0PsIJvEtkwdCNYMSaVuRz6", "pm_cardx", "pm_card"])
def test_any_other_payment_method_may_be_a_saved_card(payment_method: str) -> None:
    assert cards.may_be_saved(payment_method)
