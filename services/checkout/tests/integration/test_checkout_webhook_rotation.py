"""Rolling the webhook secret: checkout runs with the new and the old one and accepts a signature by either."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conftest import Checkout

NEW_SECRET = "whsec_" + secrets.token_urlsafe(32)
OLD_SECRET = "whsec_" + secrets.token_urlsafe(32)
# Read by the module's `checkout` fixture: Stripe's roll, while both secrets may still sign deliveries.
CHECKOUT_ENV = {"TWEETSHOP_STRIPE_WEBHOOK_SECRET": f"{NEW_SECRET},{OLD_SECRET}"}


def an_event() -> bytes:
    """A verified event of a type checkout does not act on: its answer shows the signature was accepted."""
    event = {"id": f"evt_{uuid.uuid4().hex[:14]}", "object": "event", "type": "customer.created"}
    return json.dumps({**event, "data": {"object": {"id": f"cus_{uuid.uuid4().hex[:14]}"}}}).encode()


async def test_a_webhook_signed_with_the_new_or_the_old_secret_is_accepted(checkout: Checkout) -> None:
    async with checkout.http() as http:
        for secret in (NEW_SECRET, OLD_SECRET):
            payload = an_event()
            answer = await http.post("/webhooks/stripe", content=payload, headers=checkout.signed(payload, secret))
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"received": True, "outcome": "ignored"}


async def test_a_webhook_signed_with_any_other_secret_is_refused(checkout: Checkout) -> None:
    payload = an_event()
    async with checkout.http() as http:
        for secret in ("whsec_" + secrets.token_urlsafe(32), f"{NEW_SECRET},{OLD_SECRET}"):
            answer = await http.post("/webhooks/stripe", content=payload, headers=checkout.signed(payload, secret))
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"] == "invalid_webhook"
