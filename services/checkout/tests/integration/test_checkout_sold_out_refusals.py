"""A drop's "sold out" answers, given ahead of FastAPI (checkout's refusals.py), against the real checkout process:
the same answer as the route's, the route's own rate limit counted once, and everything it cannot answer exactly
as the route would left to the route."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from conftest import Checkout

# A low limit on orders per client, so a test can pass it; every other limit as in production. The test client
# poses as a proxy (as the web app's gateway is) so each test is a client of its own (X-Forwarded-For).
ORDERS_PER_MINUTE = 6
CHECKOUT_ENV = {"TWEETSHOP_RATE_LIMIT_ORDERS": f"{ORDERS_PER_MINUTE}/minute", "TWEETSHOP_TRUSTED_PROXIES": "127.0.0.1"}


_ADDRESSES = itertools.count(1)


def client(checkout: Checkout) -> httpx.AsyncClient:
    """checkout's API as seen from a client address of this client's own (a new one each time: drawn at random, two
    tests of one run sometimes shared one, and the second met the first's rate limit)."""
    address = f"203.0.113.{next(_ADDRESSES)}"
    return httpx.AsyncClient(base_url=checkout.url, timeout=10, headers={"X-Forwarded-For": address})


async def _metric(http: httpx.AsyncClient, status: str) -> float:
    text = (await http.get("/metrics")).text
    line = next(
        (
            row
            for row in text.splitlines()
            if row.startswith("tweetshop_http_requests_total{")
            and 'method="POST"' in row
            and 'route="/orders"' in row
            and f'status="{status}"' in row
        ),
        None,
    )
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


async def test_sold_out_is_answered_as_the_route_would_and_counted_once_against_the_limit(checkout: Checkout) -> None:
    product = await checkout.list_product(stock=1)
    bought = await checkout.place(checkout.order_body(product.product_id))  # the last unit, from another address
    assert bought.status_code == 202, bought.text
    # The limiter counts in minute windows and weighs the last minute's count by how much of it the sliding window
    # still covers: just after the turn of a minute, 6 hits of the minute before weigh 6 × 0.9999, under the limit,
    # and a 7th passes (CI met it once: 12:12:59.999, then 12:13:00.001). So the 7 are sent well inside one minute.
    if time.time() % 60 > 55:
        await asyncio.sleep(60.5 - time.time() % 60)
    async with client(checkout) as http:
        before = await _metric(http, "409")
        answers = [
            await http.post(
                "/orders",
                json=checkout.order_body(product.product_id),
                headers={"Idempotency-Key": str(uuid.uuid4()), "X-Correlation-ID": f"drop-{i}"},
            )
            for i in range(ORDERS_PER_MINUTE + 1)
        ]
        after = await _metric(http, "409")
    # The minute's 6 orders: sold out, with the route's body, the correlation id and the request metrics (were a
    # refusal counted twice, ahead of FastAPI and in the route, the 4th would be refused already). The 7th is over
    # the limit: the route's 429.
    sold_out, over = answers[:ORDERS_PER_MINUTE], answers[-1]
    for i, answer in enumerate(sold_out):
        assert answer.status_code == 409, answer.text
        assert answer.json() == {"error": "insufficient_stock", "message": answer.json()["message"]}
        assert "sold out" in answer.json()["message"]
        assert answer.headers["x-correlation-id"] == f"drop-{i}"
        assert answer.headers["content-type"] == "application/json"
    assert over.status_code == 429 and over.json()["error"] == "rate_limited", over.text
    assert int(over.headers["Retry-After"]) >= 1
    assert after - before == ORDERS_PER_MINUTE


async def test_what_it_cannot_answer_exactly_goes_to_the_route(checkout: Checkout) -> None:
    product = await checkout.list_product(stock=1)
    body = checkout.order_body(product.product_id)
    await checkout.place(body)  # the last unit, from another address
    async with client(checkout) as http:
        # An invalid body for a sold-out product is still a 422 that names the field (the route's validation).
        invalid = await http.post(
            "/orders", json={**body, "quantity": "2"}, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        assert invalid.status_code == 422 and invalid.json()["error"] == "validation_error", invalid.text
        # No Idempotency-Key: the route's 400.
        no_key = await http.post("/orders", json=body)
        assert no_key.status_code == 400 and no_key.json()["error"] == "idempotency_key_required", no_key.text
        # save_card without a credential: the route's 422, not "sold out".
        save = await http.post(
            "/orders", json={**body, "save_card": True}, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        assert save.status_code == 422 and save.json()["error"] == "save_card_needs_account", save.text
        # A buyer credential that is no buyer's (revoked, made up): the route's 401, not "sold out".
        forged = await http.post(
            "/orders",
            json=body,
            headers={"Idempotency-Key": str(uuid.uuid4()), "Authorization": "Bearer tsb_" + "x" * 40},
        )
        assert forged.status_code == 401, forged.text
        # An unknown product: the route's 404 (only "sold out" and "no longer on sale" are answered ahead of it).
        unknown = await http.post(
            "/orders", json=checkout.order_body(uuid.uuid4()), headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_product", unknown.text


async def test_a_unit_back_on_sale_is_sold_at_once_whatever_was_remembered(checkout: Checkout) -> None:
    # The memory of "sold out" only chooses the path: the refusal is read from the database each time.
    product = await checkout.list_product(stock=1)
    first = (await checkout.place(checkout.order_body(product.product_id))).json()
    async with client(checkout) as http:
        for _ in range(3):  # the route's refusal, then refusals ahead of it
            refused = await http.post(
                "/orders", json=checkout.order_body(product.product_id), headers={"Idempotency-Key": str(uuid.uuid4())}
            )
            assert refused.status_code == 409 and refused.json()["error"] == "insufficient_stock", refused.text
        # catalog refuses the first order (its unit was never reserved): the unit is free again.
        await checkout.reject(first, product, "insufficient stock")
        await checkout.until_status(first, "cancelled")
        again = await http.post(
            "/orders", json=checkout.order_body(product.product_id), headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        assert again.status_code == 202, again.text
