"""checkout's limits against the real broker, Postgres and localstripe: a cap on orders waiting for payment per
buyer, card and address, and a short hold for orders waiting for 3-D Secure, after which their stock returns."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
from checkout import access
from checkout.api import OrderIn
from checkout.config import CheckoutSettings
from checkout.usecases import orders
from tweetshop_contracts import OrderCancelled, OrderPlaced
from tweetshop_platform.errors import DomainError

if TYPE_CHECKING:
    from conftest import Checkout

CHECKOUT_ENV = {
    "TWEETSHOP_UNPAID_ORDERS_CAP": "2",
    "TWEETSHOP_PAYMENT_ACTION_DEADLINE_S": "3",
    "TWEETSHOP_RECONCILE_INTERVAL_S": "0.5",
}


def a_body(checkout: Checkout, product_id: uuid.UUID, *, buyer: str, card: str, street: str) -> dict[str, Any]:
    body = checkout.order_body(product_id, payment_method=card)
    body["buyer"]["id"] = buyer
    body["shipping"]["line1"] = street
    return body


async def test_a_buyer_card_or_address_may_have_only_so_many_unpaid_orders_at_once(checkout: Checkout) -> None:
    product = await checkout.list_product(stock=50)
    run = uuid.uuid4().hex[:8]
    card = f"pm_{run}"  # never charged (no stock is reserved): only the id matters here
    first = await checkout.place(a_body(checkout, product.product_id, buyer=f"a-{run}", card=card, street=f"1 {run}"))
    second_key = str(uuid.uuid4())
    second_body = a_body(checkout, product.product_id, buyer=f"a-{run}", card=card, street=f"2 {run}")
    second = await checkout.place(second_body, second_key)
    assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)

    # Two orders of this buyer and card wait (neither reserved nor paid): a third is refused, with when to try again.
    third = await checkout.place(a_body(checkout, product.product_id, buyer=f"a-{run}", card=f"{card}y", street="3"))
    assert third.status_code == 429, third.text
    assert third.json()["error"] == "too_many_unpaid_orders" and third.json()["details"]["limit"] == "buyer"
    assert int(third.headers["Retry-After"]) >= 1
    # The same card from another buyer is refused too; so is a third order to one address.
    same_card = await checkout.place(a_body(checkout, product.product_id, buyer=f"b-{run}", card=card, street="x"))
    assert same_card.status_code == 429 and same_card.json()["details"]["limit"] == "payment_method"
    other_body = a_body(checkout, product.product_id, buyer=f"c-{run}", card=f"{card}z", street=f"1 {run}")
    other_body["shipping"]["line1"] = f"1 {run}".upper()  # the same street, typed otherwise
    same_street = await checkout.place(other_body)
    assert same_street.status_code == 202, "one order at that address so far"
    again_street = await checkout.place({**other_body, "buyer": {**other_body["buyer"], "id": f"d-{run}"}})
    assert again_street.status_code == 429 and again_street.json()["details"]["limit"] == "address"
    # A replay of an order already placed is still answered (it places nothing new).
    replay = await checkout.place(second_body, second_key)
    assert replay.status_code == 200 and replay.json()["id"] == second.json()["id"]

    # One order ends (the buyer cancels it): the buyer may order again.
    async with checkout.http() as http:
        cancelled = await http.post(
            f"/orders/{first.json()['id']}/cancel",
            headers={"Authorization": f"Bearer {first.json()['access_token']}"},
        )
    assert cancelled.status_code == 200, cancelled.text
    fourth = await checkout.place(a_body(checkout, product.product_id, buyer=f"a-{run}", card=f"{card}w", street="4"))
    assert fourth.status_code == 202, fourth.text
    async with checkout.http() as http:
        metrics = (await http.get("/metrics")).text
    assert 'checkout_unpaid_orders_refused_total{limit="buyer"}' in metrics


async def test_purchases_checked_together_are_each_answered_as_alone(checkout: Checkout) -> None:
    """``orders.check_purchases`` of several purchases of one product (one statement, as checkout's refusals ask a
    drop's) gives each what it gives it alone, against checkout's own database: a key that names an order, each
    limit of the unpaid-order cap, a saved card, a purchase that may go ahead, and a product sold out."""
    product = await checkout.list_product(stock=50)
    run = uuid.uuid4().hex[:8]
    card = f"pm_{run}"
    used_key = str(uuid.uuid4())
    for key in (used_key, None):
        body = a_body(checkout, product.product_id, buyer=f"a-{run}", card=card, street=f"1 {run}")
        placed = await checkout.place(body, key)
        assert placed.status_code == 202, placed.text
    saved = f"pm_saved_{run}"
    await checkout.sql(
        "UPDATE orders SET payment_method = $1, payment_customer = 'cus_x' WHERE idempotency_key_hash = $2",
        saved,
        access.idempotency_key_hash(used_key),
    )
    # The buyer a-... and the street have 2 unpaid orders (the cap), the card one (the other now names a saved card).
    asked = {
        "free to go": a_body(checkout, product.product_id, buyer=f"n-{run}", card=f"{card}n", street=f"9 {run}"),
        "buyer at the cap": a_body(checkout, product.product_id, buyer=f"a-{run}", card=f"{card}b", street="8"),
        "a saved card": a_body(checkout, product.product_id, buyer=f"s-{run}", card=saved, street="7"),
        "address at the cap": a_body(checkout, product.product_id, buyer=f"c-{run}", card=f"{card}c", street="x"),
        "key taken": a_body(checkout, product.product_id, buyer=f"k-{run}", card=f"{card}k", street="6"),
        "too many": {
            **a_body(checkout, product.product_id, buyer=f"q-{run}", card=f"{card}q", street="5"),
            "quantity": 51,
        },
    }
    asked["address at the cap"]["shipping"]["line1"] = f"1 {run}".upper()  # the same street, typed otherwise
    tweet_id = str(uuid.uuid4())  # one tweet for all (the test's orders name a tweet checkout does not know)
    for body in asked.values():
        body["tweet_id"] = tweet_id
    keys = {what: used_key if what == "key taken" else str(uuid.uuid4()) for what in asked}
    purchases = [
        (OrderIn.model_validate(body).to_request(), access.idempotency_key_hash(keys[what]))
        for what, body in asked.items()
    ]
    settings = CheckoutSettings(log_format="console", unpaid_orders_cap=2)

    def said(answer: orders.Checked | DomainError) -> tuple[Any, ...]:
        if isinstance(answer, DomainError):
            return ("refused", answer.status, answer.code, answer.details.get("limit"))
        return ("checked", answer.key_used, answer.price.amount_minor if answer.price else None)

    assert checkout.service.database_url is not None
    conn = await asyncpg.connect(checkout.service.database_url)
    try:
        together = [said(a) for a in await orders.check_purchases(conn, settings, purchases)]
        alone = [said((await orders.check_purchases(conn, settings, [one]))[0]) for one in purchases]
        no_cap = CheckoutSettings(log_format="console", unpaid_orders_cap=0)
        uncapped = [said(a) for a in await orders.check_purchases(conn, no_cap, purchases)]
        sold_out = await checkout.list_product(stock=0)
        assert (await checkout.place(checkout.order_body(sold_out.product_id))).status_code == 409  # checkout has it
        buyers = [checkout.order_body(sold_out.product_id) for _ in range(2)]
        for body in buyers:
            body["tweet_id"] = tweet_id
        gone = [
            said(a)
            for a in await orders.check_purchases(
                conn,
                settings,
                [(OrderIn.model_validate(body).to_request(), f"h{i}") for i, body in enumerate(buyers)],
            )
        ]
    finally:
        await conn.close()
    assert together == alone
    assert dict(zip(asked, together, strict=True)) == {
        "free to go": ("checked", False, 1200),
        "buyer at the cap": ("refused", 429, "too_many_unpaid_orders", "buyer"),
        "a saved card": ("refused", 404, "payment_method_not_found", None),
        "address at the cap": ("refused", 429, "too_many_unpaid_orders", "address"),
        "key taken": ("checked", True, None),
        "too many": ("refused", 409, "insufficient_stock", None),
    }
    assert gone == [("refused", 409, "insufficient_stock", None)] * 2
    # Without the cap (0), nothing is refused for the orders waiting; the rest is the same.
    assert dict(zip(asked, uncapped, strict=True)) == {
        **dict(zip(asked, together, strict=True)),
        "buyer at the cap": ("checked", False, 1200),
        "address at the cap": ("checked", False, 1200),
    }


async def test_an_order_waiting_for_3ds_is_held_only_briefly_then_its_stock_returns(checkout: Checkout) -> None:
    order, waiting = await checkout.order_waiting_for_3ds()
    ended = await checkout.until_status(order, "cancelled", timeout=20)
    assert ended["cancellation_reason"] == "the order was not paid in time"
    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderCancelled) for e in es))
    assert [type(e) for e in events] == [OrderPlaced, OrderCancelled]
    cancelled = events[1]
    assert isinstance(cancelled, OrderCancelled) and cancelled.stock_reserved, "catalog returns the reserved stock"
    intents = await checkout.stripe_intents_for(order["id"])
    assert [(pi["id"], pi["status"]) for pi in intents] == [(waiting["payment_intent_id"], "canceled")]


async def test_an_order_not_waiting_for_the_buyer_keeps_the_long_deadline(checkout: Checkout) -> None:
    product = await checkout.list_product()
    order = (await checkout.place(checkout.order_body(product.product_id))).json()  # pending: stock not answered
    await checkout.sql(
        "UPDATE orders SET created_at = now() - interval '10 seconds' WHERE id = $1", uuid.UUID(order["id"])
    )
    async with checkout.http() as http:
        from tweetshop_platform.settings import DEV_OPERATOR_KEY

        ran = await http.post("/ops/reconcile", headers={"Authorization": f"Bearer {DEV_OPERATOR_KEY}"})
    assert ran.status_code == 200, ran.text
    assert (await checkout.get_order(order["id"], order["access_token"]))["status"] == "pending"
