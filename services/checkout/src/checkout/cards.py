"""Saved cards, the Stripe way: rules and shapes, pure, no I/O.

A buyer account has at most one Stripe Customer (``buyers.stripe_customer_id``), made the first time the buyer
saves a card, with ``metadata.buyer_id`` and an idempotency key derived from the buyer id, so an interrupted
creation is found again rather than made twice. A card is *saved* when its PaymentMethod is attached to that
Customer; Stripe keeps it, checkout keeps nothing of it (no number ever reaches tweetshop: Stripe.js makes the
PaymentMethod in the browser; checkout sees its ``pm_…`` id, brand, last four digits and expiry).

Whose is a PaymentMethod is asked of Stripe, never of the client (``ownership``): one attached to the buyer's own
Customer is a saved card (the PaymentIntent must then name that Customer); one attached to no Customer is a
fresh card; one attached to any other Customer is someone else's, and is refused as if it did not exist.

Saving is asked with the first purchase (``save_card``): the PaymentIntent names the Customer and carries
``setup_future_usage=on_session`` -- on_session because every later payment is made with the buyer there, tapping
Pay; tweetshop never charges a saved card on its own (no subscriptions, no merchant-initiated charges), so it asks
for no off-session mandate, and the bank may still ask for 3-D Secure on a later purchase (``requires_action``,
as for a fresh card). localstripe refuses ``setup_future_usage`` and never attaches a card by itself: against
it, checkout attaches the card to the Customer just before the PaymentIntent is made (``gateway``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

PAYMENT_METHOD_ID = re.compile(r"^pm_[A-Za-z0-9_]{1,200}$")
CUSTOMER_ID = re.compile(r"^cus_[A-Za-z0-9_]{1,200}$")
# Stripe's test PaymentMethods (pm_card_visa, pm_card_threeDSecure2Required...): test mode only, and each use is a new
# card, never one saved on a Customer, however many orders named it.
TEST_PAYMENT_METHOD = re.compile(r"^pm_card_[A-Za-z0-9_]{1,190}$")
# Stripe's own setting for a card kept for payments made with the buyer present (see the module's docstring).
SETUP_FUTURE_USAGE = "on_session"

Ownership = Literal["fresh", "saved", "foreign"]


@dataclass(frozen=True)
class SavedCard:
    """What a buyer sees of a saved card: never its number."""

    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class PaymentMethodFacts:
    """What checkout needs of a PaymentMethod, as Stripe says: whose it is, and its card (None: not a card)."""

    id: str
    customer: str | None
    card: SavedCard | None


def _int(value: Any) -> int:
    # bool is an int in Python: a JSON true is not a month.
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def facts_of(data: dict[str, Any]) -> PaymentMethodFacts:
    """From a PaymentMethod as JSON (an API answer)."""
    pm_id = str(data["id"])
    customer = data.get("customer")
    if isinstance(customer, dict):  # expanded
        customer = customer.get("id")
    card = data.get("card")
    saved = None
    if data.get("type") == "card" and isinstance(card, dict):
        saved = SavedCard(
            id=pm_id,
            brand=str(card.get("brand") or "card")[:32],
            last4=str(card.get("last4") or "")[-4:],
            exp_month=_int(card.get("exp_month")),
            exp_year=_int(card.get("exp_year")),
        )
    return PaymentMethodFacts(pm_id, customer if isinstance(customer, str) else None, saved)


def ownership(pm_customer: str | None, buyer_customer: str | None) -> Ownership:
    """Whose a PaymentMethod is, for a buyer whose Customer is ``buyer_customer`` (None: has none yet)."""
    if pm_customer is None:
        return "fresh"
    if buyer_customer is not None and pm_customer == buyer_customer:
        return "saved"
    return "foreign"


def customer_idempotency_key(buyer_id: str) -> str:
    """The same key for every attempt at a buyer's Customer: Stripe answers the first one's Customer again."""
    return f"buyer-{buyer_id}-customer"


def may_be_saved(payment_method: str) -> bool:
    """Whether ``payment_method`` can be a card saved on a buyer's Customer: any id but Stripe's test tokens."""
    return TEST_PAYMENT_METHOD.match(payment_method) is None
