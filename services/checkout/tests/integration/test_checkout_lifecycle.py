"""Deadlines, the reconciler, the buyer's cancellation and bad webhooks, against the real broker, Postgres and Stripe.

This module's checkout gives every order only a few seconds to be paid, and its
reconciler looks twice a second, so the deadline cases end while the test waits.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

from tweetshop_contracts import OrderCancelled, OrderPaid, OrderPlaced
from tweetshop_devstack.testing import metric_value

if TYPE_CHECKING:
    from conftest import Checkout

DEADLINE_S = 4
CHECKOUT_ENV = {"TWEETSHOP_PAYMENT_DEADLINE_S": str(DEADLINE_S), "TWEETSHOP_RECONCILE_INTERVAL_S": "0.5"}


def bearer(order: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {order['access_token']}"}


async def metric(checkout: Checkout, name: str, **labels: str) -> float:
    """The current value of one sample of checkout's /metrics (0 when absent)."""
    async with checkout.http() as http:
        text = (await http.get("/metrics")).text
    return metric_value(text, name, **labels)


def cancelled_event(events: list[Any]) -> OrderCancelled:
    found = [e for e in events if isinstance(e, OrderCancelled)]
    assert len(found) == 1, f"exactly one OrderCancelled, got {events}"
    return found[0]


# --- the deadline and the reconciler -------------------------------------------------------


async def test_an_order_whose_stock_never_came_back_is_cancelled_by_the_reconciler_at_its_deadline(
    checkout: Checkout,
) -> None:
    reconciled_before = await metric(checkout, "checkout_reconciled_orders_total", outcome="cancelled")
    product = await checkout.list_product()
    order = (await checkout.place(checkout.order_body(product.product_id))).json()
    assert order["status"] == "pending"

    cancelled = await checkout.until_status(order, "cancelled", timeout=DEADLINE_S + 10)
    assert cancelled["cancellation_reason"] == "the order was not paid in time"
    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderCancelled) for e in es))
    assert [type(e) for e in events] == [OrderPlaced, OrderCancelled]
    assert cancelled_event(events).stock_reserved is False
    assert await checkout.stripe_intents_for(order["id"]) == [], "nothing was ever charged"

    assert await metric(checkout, "checkout_reconciled_orders_total", outcome="cancelled") > reconciled_before
    assert await metric(checkout, "checkout_reconciler_runs_total", result="ok") > 0
    assert await metric(checkout, "checkout_reconciler_last_run_timestamp_seconds") > time.time() - 30


async def test_a_3ds_payment_never_finished_is_cancelled_at_stripe_and_its_stock_released(checkout: Checkout) -> None:
    order, waiting = await checkout.order_waiting_for_3ds()

    cancelled = await checkout.until_status(order, "cancelled", timeout=DEADLINE_S + 10)
    assert cancelled["cancellation_reason"] == "the order was not paid in time"
    assert cancelled["client_secret"] is None
    intents = await checkout.stripe_intents_for(order["id"])
    assert [(pi["id"], pi["status"]) for pi in intents] == [(waiting["payment_intent_id"], "canceled")]
    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderCancelled) for e in es))
    assert cancelled_event(events).stock_reserved is True, "catalog is told to release the reserved stock"

    # The buyer coming back to the 3-D Secure dialog too late can no longer be charged.
    async with checkout.stripe_http() as stripe:
        late = await stripe.post(
            f"/v1/payment_intents/{waiting['payment_intent_id']}/_authenticate",
            data={"client_secret": waiting["client_secret"], "success": "true"},
        )
    assert late.status_code == 400
    assert [pi["status"] for pi in await checkout.stripe_intents_for(order["id"])] == ["canceled"]


async def test_a_payment_that_succeeded_but_whose_answer_was_lost_is_paid_by_the_reconciler_not_cancelled(
    checkout: Checkout,
) -> None:
    product = await checkout.list_product(price_minor=900)
    order = (await checkout.place(checkout.order_body(product.product_id))).json()
    # A crash after Stripe charged and before the database knew: an attempt recorded, no intent id, no webhook.
    async with checkout.stripe_http() as stripe:
        made = await stripe.post(
            "/v1/payment_intents",
            data={
                "amount": "900",
                "currency": "eur",
                "payment_method": checkout.CHARGED,
                "confirm": "true",
                "metadata[order_id]": order["id"],
            },
        )
    assert made.status_code == 200, made.text
    await checkout.sql("UPDATE orders SET payment_attempts = 1 WHERE id = $1", uuid.UUID(order["id"]))

    paid = await checkout.until_status(order, "paid", "cancelled", timeout=DEADLINE_S + 10)
    assert (paid["status"], paid["payment_intent_id"]) == ("paid", made.json()["id"])
    assert len(await checkout.stripe_intents_for(order["id"])) == 1


# --- the buyer cancels ----------------------------------------------------------------------


async def test_a_buyer_cancels_a_pending_order_once_and_a_late_reservation_charges_nothing(
    checkout: Checkout,
) -> None:
    product = await checkout.list_product()
    order = (await checkout.place(checkout.order_body(product.product_id))).json()
    async with checkout.http() as http:
        first = await http.post(f"/orders/{order['id']}/cancel", headers=bearer(order))
        again = await http.post(f"/orders/{order['id']}/cancel", headers=bearer(order))
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["cancellation_reason"]) == ("cancelled", "cancelled by the buyer")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"

    await checkout.reserve(order, product)  # catalog answers late
    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderCancelled) for e in es))
    assert [type(e) for e in events] == [OrderPlaced, OrderCancelled], "cancelled once, never twice"
    await asyncio.sleep(1.5)  # a wrongly triggered payment would have reached Stripe by now
    assert (await checkout.get_order(order["id"], order["access_token"]))["status"] == "cancelled"
    assert await checkout.stripe_intents_for(order["id"]) == []


async def test_a_buyer_cancels_while_3ds_waits_and_the_payment_intent_is_cancelled_at_stripe(
    checkout: Checkout,
) -> None:
    order, waiting = await checkout.order_waiting_for_3ds()
    async with checkout.http() as http:
        response = await http.post(f"/orders/{order['id']}/cancel", headers=bearer(order))
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["cancellation_reason"]) == (
        "cancelled",
        "cancelled by the buyer",
    )
    intents = await checkout.stripe_intents_for(order["id"])
    assert [(pi["id"], pi["status"]) for pi in intents] == [(waiting["payment_intent_id"], "canceled")]
    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderCancelled) for e in es))
    assert cancelled_event(events).stock_reserved is True


async def test_a_paid_order_cannot_be_cancelled_and_strangers_cannot_cancel_at_all(checkout: Checkout) -> None:
    product = await checkout.list_product()
    order = (await checkout.place(checkout.order_body(product.product_id))).json()
    other = (await checkout.place(checkout.order_body(product.product_id))).json()
    async with checkout.http() as http:
        anonymous = await http.post(f"/orders/{order['id']}/cancel")
        stranger = await http.post(f"/orders/{order['id']}/cancel", headers=bearer(other))
        assert anonymous.status_code == 401
        assert stranger.status_code == 404
        # Nor read it: another order's token is answered as an order that does not exist.
        strangers_page = await http.get(f"/orders/{order['id']}", headers=bearer(other))
        no_such_page = await http.get(f"/orders/{uuid.uuid4()}", headers=bearer(other))
        assert (strangers_page.status_code, no_such_page.status_code) == (404, 404)
        assert strangers_page.json() == no_such_page.json()
        assert strangers_page.json()["error"] == "order_not_found"
        assert (await checkout.get_order(order["id"], order["access_token"]))["status"] == "pending"

        await checkout.reserve(order, product)
        await checkout.until_status(order, "paid")
        refused = await http.post(f"/orders/{order['id']}/cancel", headers=bearer(order))
    assert refused.status_code == 409
    assert refused.json()["error"] == "order_already_paid" and "refund" in refused.json()["message"]
    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderPaid) for e in es))
    assert [type(e) for e in events] == [OrderPlaced, OrderPaid]
