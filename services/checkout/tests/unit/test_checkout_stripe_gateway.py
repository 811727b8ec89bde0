"""The Stripe gateway against a scripted HTTP server: which answers mean "retry later", which mean "declined"."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from checkout import domain
from checkout.config import CheckoutSettings
from checkout.domain import Buyer, PurchaseRequest, ShippingAddress
from checkout.gateway import PaymentDeclined, PaymentProviderUnavailable, StripeGateway
from tweetshop_contracts import utc_now

# The stripe library sends its form body through httpx's deprecated ``data=`` for raw bytes: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@dataclass
class Script:
    """The answers the fake Stripe gives, in order (the last one repeats), and what it was sent."""

    answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Idempotency-Key)
    bodies: list[dict[str, list[str]]] = field(default_factory=list)  # each request's form fields


@pytest.fixture
def stripe_script() -> Iterator[tuple[Script, str]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            script.bodies.append(parse_qs(self.rfile.read(length).decode()))
            script.seen.append((self.command, self.path, self.headers.get("Idempotency-Key")))
            status, body = script.answers[min(len(script.seen), len(script.answers)) - 1]
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield script, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def a_gateway(base_url: str) -> StripeGateway:
    settings = CheckoutSettings(
        stripe_api_base=base_url, stripe_max_network_retries=1, stripe_timeout_s=5, log_format="console"
    )
    return StripeGateway(settings)


def an_order() -> domain.Order:
    request = PurchaseRequest(
        tweet_id=uuid.uuid4(),
        product_id=uuid.uuid4(),
        quantity=1,
        buyer=Buyer("b", "b@example.com"),
        shipping=ShippingAddress("Ada", "1 rue", "Paris", "FR", 48.8, 2.3),
        payment_method="pm_card_visa",
    )
    order, _ = domain.place(uuid.uuid4(), request, domain.Price(uuid.uuid4(), 1200, 1200, "EUR"), "c", utc_now())
    return replace(order, payment_attempts=1)


def error(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **extra}}


INTENT = {"id": "pi_123", "object": "payment_intent", "status": "succeeded", "metadata": {}}


async def test_a_5xx_is_retried_with_the_same_idempotency_key_then_reported_as_unavailable(
    stripe_script: tuple[Script, str],
) -> None:
    script, url = stripe_script
    script.answers = [(503, error("api_error", "Service unavailable"))]
    order = an_order()
    with pytest.raises(PaymentProviderUnavailable):
        await a_gateway(url).create_intent(order, 1)
    keys = [key for _, _, key in script.seen]
    assert keys == [f"order-{order.id}-attempt-1"] * 2, "one retry, never with another key"


async def test_a_rate_limit_is_reported_as_unavailable_for_the_worker_to_back_off(
    stripe_script: tuple[Script, str],
) -> None:
    script, url = stripe_script
    script.answers = [(429, error("invalid_request_error", "Too many requests", code="rate_limit"))]
    with pytest.raises(PaymentProviderUnavailable) as unavailable:
        await a_gateway(url).create_intent(an_order(), 1)
    assert "RateLimitError" in str(unavailable.value)
    assert unavailable.value.nothing_done, "a 429 is refused before Stripe acts: nothing can have been created"
    assert len(script.seen) == 1, "a 429 is not hammered again at once: the worker backs off"


async def test_a_5xx_then_a_success_gives_the_intent(stripe_script: tuple[Script, str]) -> None:
    script, url = stripe_script
    script.answers = [(500, error("api_error", "oops")), (200, INTENT)]
    intent = await a_gateway(url).create_intent(an_order(), 1)
    assert (intent.id, intent.status) == ("pi_123", "succeeded")


async def test_the_intent_is_created_for_the_order_and_confirmed_in_one_call(stripe_script: tuple[Script, str]) -> None:
    script, url = stripe_script
    script.answers = [(200, {**INTENT, "amount": 1200, "currency": "eur", "livemode": False})]
    order = an_order()
    intent = await a_gateway(url).create_intent(order, 1)
    assert script.seen == [("POST", "/v1/payment_intents", f"order-{order.id}-attempt-1")]
    sent = {key: values[0] for key, values in script.bodies[0].items()}
    assert sent == {
        "amount": "1200",
        "currency": "eur",
        "payment_method": "pm_card_visa",
        "confirm": "true",
        "metadata[order_id]": str(order.id),
        "payment_method_types[0]": "card",  # a base URL of its own: localstripe's parameter
    }
    assert (intent.id, intent.status, intent.amount_minor, intent.currency, intent.livemode) == (
        "pi_123",
        "succeeded",
        1200,
        "eur",
        False,
    )


async def test_a_card_error_is_a_decline_with_stripes_message(stripe_script: tuple[Script, str]) -> None:
    script, url = stripe_script
    script.answers = [
        (402, error("card_error", "Your card was declined.", code="card_declined", payment_intent={**INTENT}))
    ]
    with pytest.raises(PaymentDeclined) as declined:
        await a_gateway(url).create_intent(an_order(), 1)
    assert declined.value.message == "Your card was declined."
    assert declined.value.payment_intent_id == "pi_123"


async def test_cancelling_an_intent_carries_an_idempotency_key_of_its_own(stripe_script: tuple[Script, str]) -> None:
    script, url = stripe_script
    script.answers = [(200, {**INTENT, "status": "canceled"})]
    intent = await a_gateway(url).cancel_intent("pi_123")
    assert intent.status == "canceled"
    assert script.seen == [("POST", "/v1/payment_intents/pi_123/cancel", "cancel-pi_123")]
