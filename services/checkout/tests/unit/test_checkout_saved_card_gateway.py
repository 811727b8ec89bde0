"""What the Stripe gateway sends for saved cards, against a scripted HTTP server: the PaymentIntent of an order
that saves its card or pays with a saved one names the buyer's Customer (real Stripe: with
``setup_future_usage=on_session``; localstripe, which refuses it: the card attached first), and a buyer's
Customer carries the buyer's opaque id only, under one idempotency key per buyer."""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from checkout import domain
from checkout.config import CheckoutSettings
from checkout.domain import Buyer, PurchaseRequest, ShippingAddress
from checkout.gateway import StripeGateway
from tweetshop_contracts import utc_now

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

INTENT = {"id": "pi_1", "object": "payment_intent", "status": "succeeded", "amount": 1200, "currency": "eur"}


@dataclass
class Seen:
    """What the fake Stripe was sent: (method, path, form fields, Idempotency-Key)."""

    calls: list[tuple[str, str, dict[str, list[str]], str | None]] = field(default_factory=list)


@pytest.fixture
def stripe() -> Iterator[tuple[Seen, str]]:
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            url = urlsplit(self.path)
            seen.calls.append(
                (self.command, url.path, parse_qs(body or url.query), self.headers.get("Idempotency-Key"))
            )
            if url.path.startswith("/v1/payment_intents"):
                answer: dict[str, Any] = INTENT
            elif url.path == "/v1/customers/search":
                answer = {"object": "search_result", "data": [], "has_more": False, "url": url.path}
            elif url.path.startswith("/v1/customers"):
                answer = {"id": "cus_1", "object": "customer", "metadata": {}}
            else:
                answer = {"id": "pm_1", "object": "payment_method", "type": "card", "customer": "cus_1"}
            payload = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield seen, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def a_gateway(base_url: str, *, localstripe: bool) -> StripeGateway:
    gateway = StripeGateway(
        CheckoutSettings(stripe_api_base=base_url, stripe_max_network_retries=0, log_format="console")
    )
    gateway._localstripe = localstripe  # the scripted server stands for real Stripe too
    return gateway


def an_order(*, customer: str | None, save_card: bool) -> domain.Order:
    request = PurchaseRequest(
        tweet_id=uuid.uuid4(),
        product_id=uuid.uuid4(),
        quantity=1,
        buyer=Buyer("ba_" + "0" * 32, "b@example.com"),
        shipping=ShippingAddress("Ada", "1 rue", "Paris", "FR", 48.8, 2.3),
        payment_method="pm_1",
    )
    request = dataclasses.replace(request, payment_customer=customer, save_card=save_card)
    order, _ = domain.place(uuid.uuid4(), request, domain.Price(uuid.uuid4(), 1200, 1200, "EUR"), "c", utc_now())
    return order


async def test_with_real_stripe_an_order_that_saves_its_card_asks_stripe_to_keep_it_for_on_session_use(
    stripe: tuple[Seen, str],
) -> None:
    seen, url = stripe
    gateway = a_gateway(url, localstripe=False)
    try:
        await gateway.create_intent(an_order(customer="cus_1", save_card=True), 1)
    finally:
        await gateway.aclose()

    [(method, path, form, _)] = seen.calls
    assert (method, path) == ("POST", "/v1/payment_intents")
    assert form["customer"] == ["cus_1"] and form["setup_future_usage"] == ["on_session"]
    assert form["payment_method"] == ["pm_1"] and form["confirm"] == ["true"]


async def test_with_localstripe_the_card_is_attached_first_and_the_intent_names_the_customer(
    stripe: tuple[Seen, str],
) -> None:
    seen, url = stripe
    gateway = a_gateway(url, localstripe=True)
    try:
        await gateway.create_intent(an_order(customer="cus_1", save_card=True), 1)
    finally:
        await gateway.aclose()

    [attach, create] = seen.calls
    assert attach[:3] == ("POST", "/v1/payment_methods/pm_1/attach", {"customer": ["cus_1"]})
    assert create[1] == "/v1/payment_intents" and create[2]["customer"] == ["cus_1"]
    assert "setup_future_usage" not in create[2]


@pytest.mark.parametrize("localstripe", [True, False])
async def test_a_saved_card_pays_on_the_customer_and_an_order_without_one_names_none(
    stripe: tuple[Seen, str], localstripe: bool
) -> None:
    seen, url = stripe
    gateway = a_gateway(url, localstripe=localstripe)
    try:
        await gateway.create_intent(an_order(customer="cus_1", save_card=False), 1)
        await gateway.create_intent(an_order(customer=None, save_card=False), 1)
    finally:
        await gateway.aclose()

    [saved, anonymous] = seen.calls
    assert saved[2]["customer"] == ["cus_1"] and "setup_future_usage" not in saved[2]
    assert "customer" not in anonymous[2] and "setup_future_usage" not in anonymous[2]


async def test_a_buyers_customer_carries_the_opaque_id_only_under_one_key_per_buyer(stripe: tuple[Seen, str]) -> None:
    seen, url = stripe
    gateway = a_gateway(url, localstripe=False)
    buyer = "ba_" + "1" * 32
    try:
        assert await gateway.create_customer(buyer) == "cus_1"
        assert await gateway.create_customer(buyer) == "cus_1"
        assert await gateway.find_customer(buyer) is None
    finally:
        await gateway.aclose()

    first, second, search = seen.calls
    assert first[2] == {"metadata[buyer_id]": [buyer]}
    assert first[3] == second[3] == f"buyer-{buyer}-customer"
    assert search[:2] == ("GET", "/v1/customers/search")
    assert search[2]["query"] == [f"metadata['buyer_id']:'{buyer}'"]
