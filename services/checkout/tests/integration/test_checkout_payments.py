"""checkout against the real broker, Postgres and localstripe: the test plays catalog, feed, tracking and the buyer.

One checkout process serves the whole module (the ``checkout`` fixture in conftest.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
from tweetshop_contracts import (
    Destination,
    OrderCancelled,
    OrderPaid,
    OrderPaymentFailed,
    OrderPlaced,
    OrderRefunded,
    ProductUpdated,
    ShipmentCreated,
)
from tweetshop_devstack.kafka_probe import publish_events
from tweetshop_devstack.services import DEV_STRIPE_API_KEY
from tweetshop_platform.settings import DEV_OPERATOR_KEY

if TYPE_CHECKING:
    from conftest import Checkout

# --- the tests ---------------------------------------------------------------------------


async def test_an_order_paid_with_a_visa_card_becomes_paid_and_order_paid_is_published(checkout: Checkout) -> None:
    product = await checkout.list_product(price_minor=1250)
    placed = await checkout.place(checkout.order_body(product.product_id, quantity=2), correlation_id="corr-buy-1")
    assert placed.status_code == 202, placed.text
    order = placed.json()
    assert (order["status"], order["amount_minor"], order["currency"]) == ("pending", 2500, "EUR")
    assert order["access_token"].startswith("tso_")

    await checkout.reserve(order, product, quantity=2)
    paid = await checkout.until_status(order, "paid")
    assert paid["payment_intent_id"].startswith("pi_")
    assert paid["client_secret"] is None and paid["failure_reason"] is None

    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderPaid) for e in es))
    assert [type(e) for e in events] == [OrderPlaced, OrderPaid]
    order_paid = events[1]
    assert isinstance(order_paid, OrderPaid)
    assert (order_paid.amount_minor, order_paid.currency, order_paid.payment_intent_id) == (
        2500,
        "EUR",
        paid["payment_intent_id"],
    )
    assert (order_paid.destination.city, order_paid.destination.country) == ("Paris", "FR")
    assert {e.correlation_id for e in events} == {"corr-buy-1"}
    intents = await checkout.stripe_intents_for(order["id"])
    assert [(pi["amount"], pi["currency"], pi["status"]) for pi in intents] == [(2500, "eur", "succeeded")]


async def test_a_declined_card_fails_the_order_with_stripes_reason_and_publishes_order_payment_failed(
    checkout: Checkout,
) -> None:
    product = await checkout.list_product()
    order = (await checkout.place(checkout.order_body(product.product_id, payment_method=checkout.DECLINED))).json()
    await checkout.reserve(order, product)

    failed = await checkout.until_status(order, "failed")
    assert failed["failure_reason"] == "Your card was declined."
    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderPaymentFailed) for e in es))
    failure = next(e for e in events if isinstance(e, OrderPaymentFailed))
    assert failure.stock_reserved is True and failure.reason == "Your card was declined."
    assert not any(isinstance(e, OrderPaid) for e in events)


async def test_the_same_idempotency_key_twice_gives_one_order_and_with_another_body_409(checkout: Checkout) -> None:
    product = await checkout.list_product()
    body = checkout.order_body(product.product_id)
    key = str(uuid.uuid4())
    first = await checkout.place(body, key)
    again = await checkout.place(body, key)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json() == first.json(), "the replay carries the same id and access token"

    reused = await checkout.place({**body, "quantity": 2}, key)
    assert reused.status_code == 409
    assert reused.json()["error"] == "idempotency_key_reused"
    events = await checkout.order_events(first.json()["id"], lambda es: len(es) >= 1)
    assert [type(e) for e in events] == [OrderPlaced]


async def test_concurrent_identical_requests_make_one_order(checkout: Checkout) -> None:
    product = await checkout.list_product()
    body = checkout.order_body(product.product_id)
    await checkout.place(body)  # the product is known from here on
    key = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=checkout.url, timeout=10) as http:
        answers = await asyncio.gather(
            *(http.post("/orders", json=body, headers={"Idempotency-Key": key}) for _ in range(8))
        )
    assert sorted(a.status_code for a in answers).count(202) == 1
    assert {a.status_code for a in answers} <= {200, 202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert len({a.json()["access_token"] for a in answers}) == 1


async def test_an_unknown_product_is_404_and_too_many_units_409_and_nothing_is_written(checkout: Checkout) -> None:
    async with httpx.AsyncClient(base_url=checkout.url, timeout=10) as http:
        unknown = await http.post(
            "/orders", json=checkout.order_body(uuid.uuid4()), headers={"Idempotency-Key": str(uuid.uuid4())}
        )
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_product"

    product = await checkout.list_product(stock=2)
    key = str(uuid.uuid4())
    too_many = await checkout.place(checkout.order_body(product.product_id, quantity=3), key)
    assert too_many.status_code == 409
    assert too_many.json()["error"] == "insufficient_stock" and "only 2 left" in too_many.json()["message"]
    # Nothing was written: the same key still works for an order that fits.
    fits = await checkout.place(checkout.order_body(product.product_id, quantity=2), key)
    assert fits.status_code == 202


async def test_orders_catalog_has_not_answered_yet_count_against_the_stock_so_a_drop_hears_sold_out_at_once(
    checkout: Checkout,
) -> None:
    # No catalog runs here: nothing reserves or refuses, as in the seconds after a drop before catalog catches up.
    product = await checkout.list_product(stock=3)
    placed = [(await checkout.place(checkout.order_body(product.product_id))).json() for _ in range(2)]
    last_two = await checkout.place(checkout.order_body(product.product_id, quantity=2))
    assert last_two.status_code == 409 and "only 1 left" in last_two.json()["message"]
    placed.append((await checkout.place(checkout.order_body(product.product_id))).json())
    assert [o["status"] for o in placed] == ["pending"] * 3
    sold_out = await checkout.place(checkout.order_body(product.product_id))
    assert sold_out.status_code == 409
    assert sold_out.json()["error"] == "insufficient_stock" and "sold out" in sold_out.json()["message"]

    # Catalog refuses one (its unit was never reserved): the claim is gone and the unit can be bought again.
    await checkout.reject(placed[0], product, "insufficient stock")
    await checkout.until_status(placed[0], "cancelled")
    again = await checkout.place(checkout.order_body(product.product_id))
    assert again.status_code == 202, again.text


async def test_the_buyer_of_the_last_unit_retrying_after_sold_out_gets_the_order_not_sold_out(
    checkout: Checkout,
) -> None:
    # The refusal is read before any transaction, in one statement with the key's lookup (a drop's thousands of
    # "sold out" answers cost one round trip each): the retry of the request that bought the last unit must
    # still find its order, whatever the stock says now.
    product = await checkout.list_product(stock=1)
    body = checkout.order_body(product.product_id)
    key = str(uuid.uuid4())
    bought = await checkout.place(body, key)
    assert bought.status_code == 202, bought.text
    other = await checkout.place(checkout.order_body(product.product_id))
    assert other.status_code == 409 and other.json()["error"] == "insufficient_stock"
    retried = await checkout.place(body, key)
    assert retried.status_code == 200, retried.text
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert retried.json()["id"] == bought.json()["id"]
    assert retried.json()["access_token"] == bought.json()["access_token"]
    # And the same key for another purchase is refused as reused, not as sold out.
    changed = await checkout.place({**body, "quantity": 2}, key)
    assert changed.status_code == 409 and changed.json()["error"] == "idempotency_key_reused"


async def test_a_reserved_order_counts_against_the_stock_until_the_copy_shows_it(checkout: Checkout) -> None:
    # catalog's StockReserved and its ProductUpdated travel on two topics: the reservation can come first.
    product = await checkout.list_product(stock=1, version=1)
    first = (await checkout.place(checkout.order_body(product.product_id))).json()
    await checkout.reserve(first, product)
    await checkout.until_status(first, "paid")
    # The copy still says 1 left (version 1): the paid order still counts, so the next buyer hears "sold out".
    after_payment = await checkout.place(checkout.order_body(product.product_id))
    assert after_payment.status_code == 409 and "sold out" in after_payment.json()["message"], after_payment.text

    # catalog's ProductUpdated for that sale arrives (version 2, 0 left): still sold out, now from the copy itself.
    await checkout.update_product(product, stock_available=0, version=2)
    # The merchant restocks one (version 3): the sale is in the copy, it no longer counts twice.
    await checkout.update_product(product, stock_available=1, version=3)
    await checkout.until_accepted(product, what="the restocked unit to be on sale again")


async def test_a_reservation_the_copy_already_counts_is_not_claimed_twice(checkout: Checkout) -> None:
    # catalog (contract 1.3.0) counts the units it ever reserved in every ProductUpdated. Its ProductUpdated can
    # reach checkout before the StockReserved it follows (two topics; under a drop's load, seconds before): the
    # reserved orders are still pending here, and without the count they were taken off a copy that already
    # showed them, so the last units were refused while catalog still had them.
    product = await checkout.list_product(stock=2, units_reserved_total=0)
    first, second = [(await checkout.place(checkout.order_body(product.product_id))).json() for _ in range(2)]
    refused = await checkout.place(checkout.order_body(product.product_id))
    assert refused.status_code == 409 and "sold out" in refused.json()["message"], refused.text
    # catalog reserved both (2 ever reserved) and the merchant added a unit: 1 left. No StockReserved yet. Until
    # checkout reads this, its copy says 2 left and both are claimed: no order can be accepted before.
    await checkout.update_product(product, stock_available=1, units_reserved_total=2, version=2)
    await checkout.until_accepted(product, what="the unit the copy shows free to be sold, not claimed twice")
    sold_out = await checkout.place(checkout.order_body(product.product_id))
    assert sold_out.status_code == 409 and "sold out" in sold_out.json()["message"], sold_out.text

    # The two StockReserved arrive: heard 2, the copy counts 2, the third order still unanswered: still sold out.
    await checkout.reserve(first, product)
    await checkout.reserve(second, product)
    await checkout.until_status(first, "paid")
    await checkout.until_status(second, "paid")
    still = await checkout.place(checkout.order_body(product.product_id))
    assert still.status_code == 409 and "sold out" in still.json()["message"], still.text


async def test_a_reservation_heard_before_the_copy_counts_it_is_still_claimed(checkout: Checkout) -> None:
    # The other order of arrival: StockReserved first. The copy (1 left, none reserved) does not show the
    # reservation yet; checkout has heard one more than it counts, so the unit stays taken.
    product = await checkout.list_product(stock=1, units_reserved_total=0)
    first = (await checkout.place(checkout.order_body(product.product_id))).json()
    reserved = await checkout.reserve(first, product)
    await checkout.until_status(first, "paid")
    after_payment = await checkout.place(checkout.order_body(product.product_id))
    assert after_payment.status_code == 409 and "sold out" in after_payment.json()["message"], after_payment.text
    # Another StockReserved for the same order (a new event id: not a redelivery the inbox drops) is heard once per
    # order: were it counted again, the unit freed below would stay claimed.
    await publish_events(checkout.kafka, checkout.namespace, reserved.model_copy(update={"event_id": uuid.uuid4()}))
    await asyncio.sleep(1.5)  # time for it to be applied
    # A restock the merchant makes while catalog's ProductUpdated for the sale is still on its way: the copy says
    # 2 left of which 1 reserved (a newer version, counted): one unit is free again.
    await checkout.update_product(product, stock_available=1, units_reserved_total=1, version=3)
    await checkout.until_accepted(product, what="the restocked unit on sale")


async def test_a_newer_product_version_wins_and_a_stale_one_is_dropped(checkout: Checkout) -> None:
    listed = await checkout.list_product(price_minor=1000, version=1)
    newer = ProductUpdated(
        **{**listed.model_dump(exclude={"event_id", "event_type"}), "price_minor": 1500, "version": 3}
    )
    stale = ProductUpdated(
        **{**listed.model_dump(exclude={"event_id", "event_type"}), "price_minor": 999, "version": 2}
    )
    await publish_events(checkout.kafka, checkout.namespace, newer, stale)

    async def priced_at_1500() -> httpx.Response | None:
        response = await checkout.place(checkout.order_body(listed.product_id))
        return response if response.json()["amount_minor"] == 1500 else None

    await checkout.eventually(priced_at_1500, what="the new price")
    await asyncio.sleep(0.5)  # the stale version, published after, has been read by now
    assert (await checkout.place(checkout.order_body(listed.product_id))).json()["amount_minor"] == 1500


async def test_the_same_stock_reserved_delivered_twice_creates_one_payment_intent(checkout: Checkout) -> None:
    product = await checkout.list_product()
    order = (await checkout.place(checkout.order_body(product.product_id))).json()
    reserved = await checkout.reserve(order, product)
    # The same message again (a redelivery) and another reservation event for the same order.
    await publish_events(
        checkout.kafka, checkout.namespace, reserved, reserved.model_copy(update={"event_id": uuid.uuid4()})
    )
    await checkout.until_status(order, "paid")
    await asyncio.sleep(1.5)  # time for a wrongly triggered second charge to reach Stripe
    intents = await checkout.stripe_intents_for(order["id"])
    assert len(intents) == 1
    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderPaid) for e in es))
    assert [type(e) for e in events].count(OrderPaid) == 1


async def test_a_rejected_reservation_cancels_the_order_without_charging(checkout: Checkout) -> None:
    product = await checkout.list_product()
    order = (await checkout.place(checkout.order_body(product.product_id))).json()
    await checkout.reject(order, product, "only 0 left in stock, 1 asked")

    cancelled = await checkout.until_status(order, "cancelled")
    assert cancelled["cancellation_reason"] == "only 0 left in stock, 1 asked"
    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderCancelled) for e in es))
    cancel = next(e for e in events if isinstance(e, OrderCancelled))
    assert cancel.stock_reserved is False
    assert await checkout.stripe_intents_for(order["id"]) == []


async def test_a_3ds_card_waits_for_the_buyer_then_the_order_is_paid(checkout: Checkout) -> None:
    order, waiting = await checkout.order_waiting_for_3ds()
    assert waiting["client_secret"].startswith(waiting["payment_intent_id"])
    assert waiting["failure_reason"] is None

    await checkout.authenticate(waiting, success=True)
    paid = await checkout.until_status(order, "paid", timeout=15)
    assert paid["client_secret"] is None
    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderPaid) for e in es))
    assert [type(e) for e in events] == [OrderPlaced, OrderPaid]


async def test_a_failed_3ds_authentication_fails_the_order(checkout: Checkout) -> None:
    order, waiting = await checkout.order_waiting_for_3ds()
    await checkout.authenticate(waiting, success=False)
    failed = await checkout.until_status(order, "failed", timeout=15)
    assert "authentication" in failed["failure_reason"]
    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderPaymentFailed) for e in es))
    assert [type(e) for e in events] == [OrderPlaced, OrderPaymentFailed]


async def test_a_signed_stripe_event_is_applied_once_however_often_it_is_delivered(checkout: Checkout) -> None:
    order, waiting = await checkout.order_waiting_for_3ds()
    # The worker would notice the payment itself within a second: only the webhook may tell it here.
    await checkout.sql(
        "UPDATE orders SET payment_due_at = now() + interval '1 hour' WHERE id = $1", uuid.UUID(order["id"])
    )
    await checkout.authenticate(waiting, success=True)
    event = {
        "id": f"evt_{uuid.uuid4().hex[:14]}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": waiting["payment_intent_id"],
                "object": "payment_intent",
                "status": "succeeded",
                "metadata": {"order_id": order["id"]},
            }
        },
    }
    payload = json.dumps(event).encode()
    async with httpx.AsyncClient(base_url=checkout.url, timeout=10) as http:
        first = await http.post("/webhooks/stripe", content=payload, headers=checkout.signed(payload))
        second = await http.post("/webhooks/stripe", content=payload, headers=checkout.signed(payload))
    assert (first.status_code, first.json()["outcome"]) == (200, "applied")
    assert (second.status_code, second.json()["outcome"]) == (200, "duplicate")
    assert (await checkout.get_order(order["id"], order["access_token"]))["status"] == "paid"
    await asyncio.sleep(1.5)  # a wrongly applied second delivery or a worker re-check would have published by now
    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderPaid) for e in es))
    assert [type(e) for e in events] == [OrderPlaced, OrderPaid]


async def test_a_webhook_with_a_bad_signature_is_refused_and_changes_nothing(checkout: Checkout) -> None:
    product = await checkout.list_product()
    order = (await checkout.place(checkout.order_body(product.product_id))).json()
    forged = {
        "id": f"evt_{uuid.uuid4().hex[:14]}",
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_forged", "status": "succeeded", "metadata": {"order_id": order["id"]}}},
    }
    async with httpx.AsyncClient(base_url=checkout.url, timeout=10) as http:
        response = await http.post(
            "/webhooks/stripe", json=forged, headers={"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}"}
        )
    assert response.status_code == 400 and response.json()["error"] == "invalid_webhook"
    assert (await checkout.get_order(order["id"], order["access_token"]))["status"] == "pending"


async def test_reading_an_order_needs_its_own_token(checkout: Checkout) -> None:
    product = await checkout.list_product()
    mine = (await checkout.place(checkout.order_body(product.product_id))).json()
    theirs = (await checkout.place(checkout.order_body(product.product_id))).json()
    async with httpx.AsyncClient(base_url=checkout.url, timeout=10) as http:
        anonymous = await http.get(f"/orders/{mine['id']}")
        wrong = await http.get(f"/orders/{mine['id']}", headers={"Authorization": f"Bearer {theirs['access_token']}"})
    assert anonymous.status_code == 401
    assert wrong.status_code == 404


async def test_a_shipment_gives_the_buyer_a_tracking_url_with_their_token(checkout: Checkout) -> None:
    product = await checkout.list_product()
    order = (await checkout.place(checkout.order_body(product.product_id))).json()
    await checkout.reserve(order, product)
    await checkout.until_status(order, "paid")
    shipment = ShipmentCreated(
        producer="tracking",
        correlation_id="x",
        shipment_id=uuid.uuid4(),
        order_id=uuid.UUID(order["id"]),
        status="label_created",
        destination=Destination(city="Paris", country="FR", lat=48.86, lon=2.35),
    )
    await publish_events(checkout.kafka, checkout.namespace, shipment)

    async def shipped() -> dict[str, Any] | None:
        current = await checkout.get_order(order["id"], order["access_token"])
        return current if current["tracking_url"] else None

    current = await checkout.eventually(shipped, what="the shipment")
    assert current["shipment_id"] == str(shipment.shipment_id)
    assert current["tracking_url"].endswith(f"/track/{order['id']}?token={order['access_token']}")


async def test_a_paid_order_is_refunded_in_part_then_in_full(checkout: Checkout) -> None:
    product = await checkout.list_product(price_minor=1000)
    key = await checkout.merchant_key(product.merchant_id)
    order = (await checkout.place(checkout.order_body(product.product_id, quantity=2))).json()
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=checkout.url, timeout=10) as http:

        async def refund_answered() -> httpx.Response | None:
            # 403 until checkout has read the merchant's key from catalog.merchants.v1.
            answer = await http.post(f"/orders/{order['id']}/refund", headers=auth)
            return None if answer.status_code == 403 else answer

        unpaid = await checkout.eventually(refund_answered, what="the merchant's key reaching checkout")
        assert unpaid.status_code == 409 and unpaid.json()["error"] == "order_not_paid"
        await checkout.reserve(order, product, quantity=2)
        await checkout.until_status(order, "paid")

        # Only the merchant refunds: not the buyer, not another merchant, not without a key.
        buyer = await http.post(
            f"/orders/{order['id']}/refund", headers={"Authorization": f"Bearer {order['access_token']}"}
        )
        assert (buyer.status_code, buyer.json()["error"]) == (403, "refund_by_merchant_only")
        other_key = await checkout.merchant_key(uuid.uuid4())
        other = await http.post(f"/orders/{order['id']}/refund", headers={"Authorization": f"Bearer {other_key}"})
        assert (other.status_code, other.json()["error"]) == (403, "not_the_merchant")
        assert (await http.post(f"/orders/{order['id']}/refund")).status_code == 401
        unknown = await http.post(f"/orders/{uuid.uuid4()}/refund", headers=auth)
        assert unknown.status_code == 404
        assert (await checkout.get_order(order["id"], order["access_token"]))["refunded_minor"] == 0

        part = await http.post(f"/orders/{order['id']}/refund", json={"amount_minor": 500}, headers=auth)
        assert part.status_code == 200, part.text
        assert (part.json()["status"], part.json()["refunded_minor"]) == ("paid", 500)
        too_much = await http.post(f"/orders/{order['id']}/refund", json={"amount_minor": 1501}, headers=auth)
        assert too_much.status_code == 409 and too_much.json()["error"] == "refund_exceeds_remaining"
        # A rotated key stops working once checkout has read the rotation; the new one takes over.
        new_key = await checkout.merchant_key(product.merchant_id, rotate=True)
        new_auth = {"Authorization": f"Bearer {new_key}"}

        async def rotation_read() -> bool | None:
            rows = await checkout.sql("SELECT api_key_hash FROM merchants WHERE id = $1", product.merchant_id)
            return True if rows and rows[0]["api_key_hash"] == hashlib.sha256(new_key.encode()).hexdigest() else None

        await checkout.eventually(rotation_read, what="checkout to read the key rotation")
        old = await http.post(f"/orders/{order['id']}/refund", json={"amount_minor": 1}, headers=auth)
        assert (old.status_code, old.json()["error"]) == (403, "not_the_merchant")
        rest = await http.post(f"/orders/{order['id']}/refund", headers=new_auth)
        assert (rest.json()["status"], rest.json()["refunded_minor"]) == ("refunded", 2000)

    events = await checkout.order_events(order["id"], lambda es: sum(isinstance(e, OrderRefunded) for e in es) >= 2)
    refunds = [e for e in events if isinstance(e, OrderRefunded)]
    assert [(r.amount_minor, r.refunded_total_minor, r.full, r.restock) for r in refunds] == [
        (500, 500, False, False),
        (1500, 2000, True, True),
    ]


async def test_an_intent_made_by_an_attempt_whose_answer_was_lost_is_adopted_not_charged_again(
    checkout: Checkout,
) -> None:
    product = await checkout.list_product(price_minor=700)
    order = (await checkout.place(checkout.order_body(product.product_id))).json()
    # The state a crash leaves behind: the attempt was committed, Stripe made the intent, its id never got saved.
    async with httpx.AsyncClient(base_url=checkout.stripe, auth=(DEV_STRIPE_API_KEY, ""), timeout=10) as stripe:
        made = await stripe.post(
            "/v1/payment_intents",
            data={
                "amount": "700",
                "currency": "eur",
                "payment_method": checkout.CHARGED,
                "confirm": "true",
                "metadata[order_id]": order["id"],
            },
        )
    assert made.status_code == 200, made.text
    assert checkout.service.database_url is not None
    conn = await asyncpg.connect(checkout.service.database_url)
    try:
        await conn.execute("UPDATE orders SET payment_attempts = 1 WHERE id = $1", uuid.UUID(order["id"]))
    finally:
        await conn.close()

    await checkout.reserve(order, product)
    paid = await checkout.until_status(order, "paid")
    assert paid["payment_intent_id"] == made.json()["id"]
    assert len(await checkout.stripe_intents_for(order["id"])) == 1


# --- bad webhooks -----------------------------------------------------------------------------


def a_success_event(payment_intent_id: str, order_id: str) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:14]}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": payment_intent_id,
                "object": "payment_intent",
                "status": "succeeded",
                "metadata": {"order_id": order_id},
            }
        },
    }


@pytest.mark.parametrize(
    "case",
    ["stale", "unsigned", "wrong_secret", "tampered", "not_json", "not_an_object"],
)
async def test_a_bad_webhook_is_refused_with_400_and_changes_nothing(checkout: Checkout, case: str) -> None:
    order, waiting = await checkout.order_waiting_for_3ds()
    event = a_success_event(waiting["payment_intent_id"], order["id"])
    payload = json.dumps(event).encode()
    headers = checkout.signed(payload)
    if case == "stale":  # a genuine delivery replayed after Stripe's 300 s tolerance
        headers = checkout.signed(payload, at=time.time() - 301)
    elif case == "unsigned":
        headers = {"Content-Type": "application/json"}
    elif case == "wrong_secret":
        headers = checkout.signed(payload, "whsec_someone_else")
    elif case == "tampered":  # signed, then changed on the way
        payload = payload.replace(b"payment_intent.succeeded", b"payment_intent.canceled")
    elif case == "not_json":
        payload = b"payment_intent.succeeded for " + order["id"].encode()
        headers = checkout.signed(payload)
    elif case == "not_an_object":
        payload = b'["payment_intent.succeeded"]'
        headers = checkout.signed(payload)
    async with checkout.http() as http:
        response = await http.post("/webhooks/stripe", content=payload, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_webhook" and response.json()["message"]
    assert (await checkout.get_order(order["id"], order["access_token"]))["status"] == "requires_action"
    assert await checkout.sql("SELECT 1 FROM stripe_events WHERE event_id = $1", event["id"]) == []


async def test_a_signed_event_about_someone_elses_payment_changes_nothing(checkout: Checkout) -> None:
    order, _ = await checkout.order_waiting_for_3ds()
    payload = json.dumps(a_success_event("pi_not_ours", str(uuid.uuid4()))).encode()
    async with checkout.http() as http:
        response = await http.post("/webhooks/stripe", content=payload, headers=checkout.signed(payload))
    assert (response.status_code, response.json()["outcome"]) == (200, "not_ours")
    assert (await checkout.get_order(order["id"], order["access_token"]))["status"] == "requires_action"


async def test_a_refund_of_an_order_never_paid_is_refused_and_writes_nothing(checkout: Checkout) -> None:
    product = await checkout.list_product()
    key = await checkout.merchant_key(product.merchant_id)
    order = (await checkout.place(checkout.order_body(product.product_id))).json()
    auth = {"Authorization": f"Bearer {key}"}
    async with checkout.http() as http:

        async def refund_answered() -> httpx.Response | None:
            answer = await http.post(f"/orders/{order['id']}/refund", json={"amount_minor": 100}, headers=auth)
            return None if answer.status_code == 403 else answer

        refused = await checkout.eventually(refund_answered, what="the merchant's key reaching checkout")
    assert refused.status_code == 409 and refused.json()["error"] == "order_not_paid"
    rows = await checkout.sql("SELECT count(*) AS n FROM refunds WHERE order_id = $1", uuid.UUID(order["id"]))
    assert rows[0]["n"] == 0


# --- payment integrity: an order is paid only by its own intent, for its own price --------------------------------


async def a_paid_intent(checkout: Checkout, order_id: str, *, amount: int, currency: str = "eur") -> dict[str, Any]:
    """Anyone holding a Stripe API key can make and confirm an intent that names any order in its metadata."""
    async with checkout.stripe_http() as stripe:
        made = await stripe.post(
            "/v1/payment_intents",
            data={
                "amount": str(amount),
                "currency": currency,
                "payment_method": checkout.CHARGED,
                "confirm": "true",
                "metadata[order_id]": order_id,
            },
        )
    assert made.status_code == 200 and made.json()["status"] == "succeeded", made.text
    return dict(made.json())


def a_stripe_event(event_type: str, intent: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"evt_{uuid.uuid4().hex[:14]}", "object": "event", "type": event_type, "data": {"object": intent}}


async def mismatches_of(checkout: Checkout, order_id: str) -> list[tuple[str, str, str]]:
    rows = await checkout.sql(
        "SELECT payment_intent_id, reason, source FROM payment_mismatches WHERE order_id = $1", uuid.UUID(order_id)
    )
    return sorted((r["payment_intent_id"], r["reason"], r["source"]) for r in rows)


async def mismatch_count(checkout: Checkout, reason: str, source: str) -> float:
    async with checkout.http() as http:
        text = (await http.get("/metrics")).text
    prefix = f'checkout_payment_mismatches_total{{reason="{reason}",source="{source}"}} '
    return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


async def test_a_cheap_foreign_payment_naming_an_order_never_pays_it(checkout: Checkout) -> None:
    """The attack: a 3-D Secure order waits; a $1 intent with its order id succeeds and Stripe signs the webhook."""
    order, waiting = await checkout.order_waiting_for_3ds()
    counted_before = await mismatch_count(checkout, "foreign_intent", "webhook")
    forged = await a_paid_intent(checkout, order["id"], amount=100)
    payload = json.dumps(a_stripe_event("payment_intent.succeeded", forged)).encode()
    async with checkout.http() as http:
        answer = await http.post("/webhooks/stripe", content=payload, headers=checkout.signed(payload))
    assert (answer.status_code, answer.json()["outcome"]) == (200, "mismatch")

    now = await checkout.get_order(order["id"], order["access_token"])
    assert (now["status"], now["payment_intent_id"]) == ("requires_action", waiting["payment_intent_id"])
    assert await mismatches_of(checkout, order["id"]) == [(forged["id"], "foreign_intent", "webhook")]
    assert await mismatch_count(checkout, "foreign_intent", "webhook") == counted_before + 1
    async with checkout.http() as http:
        listed = await http.get("/ops/payment-mismatches", headers={"Authorization": f"Bearer {DEV_OPERATOR_KEY}"})
        refused = await http.get(
            "/ops/payment-mismatches", headers={"Authorization": f"Bearer {order['access_token']}"}
        )
    assert listed.status_code == 200 and refused.status_code == 403
    mine = [m for m in listed.json() if m["order_id"] == order["id"]]
    assert [(m["payment_intent_id"], m["reason"], m["outcome"], m["intent_amount_minor"]) for m in mine] == [
        (forged["id"], "foreign_intent", "paid", 100)
    ]

    # The order's own payment still completes it, with its own intent.
    await checkout.authenticate(waiting, success=True)
    paid = await checkout.until_status(order, "paid", timeout=15)
    assert paid["payment_intent_id"] == waiting["payment_intent_id"]
    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderPaid) for e in es))
    order_paid = next(e for e in events if isinstance(e, OrderPaid))
    assert order_paid.payment_intent_id == waiting["payment_intent_id"]
    assert [type(e) for e in events] == [OrderPlaced, OrderPaid]


async def test_a_webhook_is_checked_against_stripes_own_object(checkout: Checkout) -> None:
    """A signed event that says the order's own intent succeeded, while Stripe says it still waits: Stripe decides."""
    order, waiting = await checkout.order_waiting_for_3ds()
    await checkout.sql(
        "UPDATE orders SET payment_due_at = now() + interval '1 hour' WHERE id = $1", uuid.UUID(order["id"])
    )
    claimed = {
        "id": waiting["payment_intent_id"],
        "object": "payment_intent",
        "status": "succeeded",
        "amount": order["amount_minor"],
        "currency": "eur",
        "livemode": False,
        "metadata": {"order_id": order["id"]},
    }
    payload = json.dumps(a_stripe_event("payment_intent.succeeded", claimed)).encode()
    async with checkout.http() as http:
        answer = await http.post("/webhooks/stripe", content=payload, headers=checkout.signed(payload))
    assert (answer.status_code, answer.json()["outcome"]) == (200, "no_change")
    assert (await checkout.get_order(order["id"], order["access_token"]))["status"] == "requires_action"


@pytest.mark.parametrize(("amount", "currency", "reason"), [(100, "eur", "amount"), (1200, "usd", "currency")])
async def test_the_orders_own_intent_pays_it_only_at_its_price(
    checkout: Checkout, amount: int, currency: str, reason: str
) -> None:
    """Recorded on the order, succeeded at Stripe, but for another amount or currency: recorded, never paid."""
    order, _ = await checkout.order_waiting_for_3ds()
    assert (order["amount_minor"], order["currency"]) == (1200, "EUR")
    wrong = await a_paid_intent(checkout, order["id"], amount=amount, currency=currency)
    await checkout.sql(
        "UPDATE orders SET payment_intent_id = $2, payment_due_at = now() + interval '1 hour' WHERE id = $1",
        uuid.UUID(order["id"]),
        wrong["id"],
    )
    payload = json.dumps(a_stripe_event("payment_intent.succeeded", wrong)).encode()
    async with checkout.http() as http:
        answer = await http.post("/webhooks/stripe", content=payload, headers=checkout.signed(payload))
    assert (answer.status_code, answer.json()["outcome"]) == (200, "mismatch")
    # The payment worker's own look at the intent comes to the same verdict.
    await checkout.sql("UPDATE orders SET payment_due_at = now() WHERE id = $1", uuid.UUID(order["id"]))

    async def seen_by_the_worker() -> list[tuple[str, str, str]] | None:
        found = await mismatches_of(checkout, order["id"])
        return found if len(found) == 2 else None

    found = await checkout.eventually(seen_by_the_worker, what="the worker to record the mismatch")
    assert found == sorted([(wrong["id"], reason, "webhook"), (wrong["id"], reason, "worker")])
    assert (await checkout.get_order(order["id"], order["access_token"]))["status"] == "requires_action"
    events = await checkout.order_events(order["id"], lambda es: len(es) >= 1)
    assert [type(e) for e in events] == [OrderPlaced]


async def test_a_webhook_never_adopts_an_intent_the_order_has_not_recorded(checkout: Checkout) -> None:
    product = await checkout.list_product()
    order = (await checkout.place(checkout.order_body(product.product_id))).json()  # not reserved: nothing charged
    stranger = await a_paid_intent(checkout, order["id"], amount=1200)
    payload = json.dumps(a_stripe_event("payment_intent.succeeded", stranger)).encode()
    async with checkout.http() as http:
        answer = await http.post("/webhooks/stripe", content=payload, headers=checkout.signed(payload))
    assert (answer.status_code, answer.json()["outcome"]) == (200, "deferred")
    now = await checkout.get_order(order["id"], order["access_token"])
    assert (now["status"], now["payment_intent_id"]) == ("pending", None)


async def test_a_payment_naming_an_order_that_ended_without_one_is_recorded_not_applied(checkout: Checkout) -> None:
    product = await checkout.list_product()
    order = (await checkout.place(checkout.order_body(product.product_id))).json()
    async with checkout.http() as http:
        cancelled = await http.post(
            f"/orders/{order['id']}/cancel", headers={"Authorization": f"Bearer {order['access_token']}"}
        )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    late = await a_paid_intent(checkout, order["id"], amount=1200)
    payload = json.dumps(a_stripe_event("payment_intent.succeeded", late)).encode()
    async with checkout.http() as http:
        answer = await http.post("/webhooks/stripe", content=payload, headers=checkout.signed(payload))
    assert (answer.status_code, answer.json()["outcome"]) == (200, "mismatch")
    assert await mismatches_of(checkout, order["id"]) == [(late["id"], "unrecorded_intent", "webhook")]
    now = await checkout.get_order(order["id"], order["access_token"])
    assert (now["status"], now["payment_intent_id"]) == ("cancelled", None)


async def test_recovery_after_a_lost_answer_adopts_only_an_intent_at_the_orders_price(checkout: Checkout) -> None:
    product = await checkout.list_product(price_minor=900)
    order = (await checkout.place(checkout.order_body(product.product_id))).json()
    decoy = await a_paid_intent(checkout, order["id"], amount=1)  # names the order, charges 1 cent
    await checkout.sql("UPDATE orders SET payment_attempts = 1 WHERE id = $1", uuid.UUID(order["id"]))
    await checkout.reserve(order, product)
    paid = await checkout.until_status(order, "paid")
    assert paid["payment_intent_id"] != decoy["id"]
    intents = {pi["id"]: pi for pi in await checkout.stripe_intents_for(order["id"])}
    assert intents[paid["payment_intent_id"]]["amount"] == 900


async def test_the_reconciler_applies_the_same_rule(checkout: Checkout) -> None:
    """An overdue order whose recorded intent succeeded for less than its price is not paid by the reconciler."""
    order, _ = await checkout.order_waiting_for_3ds()
    wrong = await a_paid_intent(checkout, order["id"], amount=50)
    await checkout.sql(
        """UPDATE orders SET payment_intent_id = $2, payment_due_at = NULL, created_at = now() - interval '3 hours'
           WHERE id = $1""",
        uuid.UUID(order["id"]),
        wrong["id"],
    )
    async with checkout.http() as http:
        ran = await http.post("/ops/reconcile", headers={"Authorization": f"Bearer {DEV_OPERATOR_KEY}"})
    assert ran.status_code == 200, ran.text
    assert ran.json()["ended"].get("mismatch", 0) >= 1
    assert (wrong["id"], "amount", "reconciler") in await mismatches_of(checkout, order["id"])
    assert (await checkout.get_order(order["id"], order["access_token"]))["status"] == "requires_action"


async def _applied_after_the_claim(
    database_url: str,
    order_id: uuid.UUID,
    apply: Any,
    *,
    meanwhile: str | None = None,
) -> tuple[Any, ...]:
    """Stage ``order_id`` as an order waiting for its payment, claim it as the payment worker does, run
    ``meanwhile`` (SQL on ``$1``, the order: someone else's write after the claim), then ``apply(conn, step)``;
    what it returned, the order's row and the outbox rows it wrote, read in the same transaction, which is then
    rolled back (the module's checkout process never sees any of it)."""
    from checkout import repository
    from checkout.usecases.payments import PaymentStep

    conn = await asyncpg.connect(database_url)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(
                """UPDATE orders SET status = 'pending', payment_intent_id = NULL, client_secret = NULL,
                          failure_reason = NULL, payment_attempts = 0, payment_retries = 2,
                          payment_due_at = '-infinity'
                   WHERE id = $1""",
                order_id,
            )
            # First by its due time: the claim takes this order and no other. The claim and the write meanwhile
            # each run in a savepoint, as close to the service's own transactions as one rolled-back test gets
            # (the compare-and-set looks at what the row holds, so it sees the write either way).
            async with conn.transaction():
                (claimed,) = await repository.claim_due_payments(conn, 1, 30, 900, 900)
            assert claimed.order.id == order_id
            if meanwhile is not None:
                async with conn.transaction():
                    await conn.execute(meanwhile, order_id)
            last_outbox = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
            step = PaymentStep(claimed.order, claimed.overdue, claimed.version, claimed.access_hash)
            returned = await apply(conn, step)
            row = await conn.fetchrow(
                """SELECT status, payment_intent_id, client_secret, failure_reason, payment_retries,
                          payment_attempts, extract(epoch FROM payment_due_at - now()) AS due_in, reservation_heard
                   FROM orders WHERE id = $1""",
                order_id,
            )
            published = [
                (r["event_type"], r["message_key"], _without_ids(r["payload"]))
                for r in await conn.fetch(
                    "SELECT event_type, message_key, payload FROM outbox WHERE id > $1 ORDER BY id", last_outbox
                )
            ]
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    return returned, tuple(row), published


def _without_ids(payload: bytes) -> dict[str, Any]:
    """An event's payload without what differs between two runs of the same decision (its id and time)."""
    event = json.loads(payload)
    for fresh in ("event_id", "occurred_at", "paid_at", "failed_at", "cancelled_at"):
        event.pop(fresh, None)
    return dict(event)


async def test_the_workers_answer_applied_as_claimed_leaves_what_the_row_lock_path_leaves(checkout: Checkout) -> None:
    """The payment worker applies Stripe's answer in one statement (``apply_as_claimed``): the order as its claim
    returned it decides, written with its events only if no one changed the row since. For a success, a decline
    and 3-D Secure it leaves the order and the outbox exactly as ``apply_payment_outcome`` under the row lock does;
    a success at the wrong price (a mismatch to record) it leaves to that path; after someone else's change to
    the order it writes nothing, and the locked path then decides on the order as it is."""
    from checkout.config import CheckoutSettings
    from checkout.domain import IntentFacts, PaymentOutcome
    from checkout.usecases.payments import apply_as_claimed, apply_payment_outcome
    from tweetshop_platform.uow import joining

    product = await checkout.list_product(stock=5)
    response = await checkout.place(checkout.order_body(product.product_id))
    assert response.status_code == 202, response.text
    order = response.json()  # waiting for catalog's answer, which never comes: the worker leaves it alone
    order_id = uuid.UUID(order["id"])
    assert checkout.service.database_url is not None
    url = checkout.service.database_url
    settings = CheckoutSettings()
    amount, currency = order["amount_minor"], order["currency"]
    facts = IntentFacts(order_id=str(order_id), amount_minor=amount, currency=currency, livemode=False)
    paid = PaymentOutcome("paid", "pi_as_claimed", facts=facts)
    outcomes = {
        "paid": paid,
        "declined": PaymentOutcome("failed", "pi_as_claimed", reason="Your card was declined.", facts=facts),
        "3-D Secure": PaymentOutcome("requires_action", "pi_as_claimed", client_secret="pi_as_claimed_secret_x"),
        "wrong price": PaymentOutcome(
            "paid", "pi_as_claimed", facts=IntentFacts(str(order_id), amount - 1, currency, False)
        ),
    }

    def as_claimed(outcome: PaymentOutcome) -> Any:
        async def apply(conn: asyncpg.Connection, step: Any) -> Any:
            return await apply_as_claimed(conn, step, outcome, settings)

        return apply

    def under_the_lock(outcome: PaymentOutcome) -> Any:
        async def apply(conn: asyncpg.Connection, step: Any) -> Any:
            async with joining(conn) as uow:
                return await apply_payment_outcome(uow, step.order.id, outcome, settings)

        return apply

    for name, outcome in outcomes.items():
        fast_change, fast_row, fast_published = await _applied_after_the_claim(url, order_id, as_claimed(outcome))
        change, row, published = await _applied_after_the_claim(url, order_id, under_the_lock(outcome))
        if name == "wrong price":
            assert fast_change is None and fast_published == [], "a mismatch is more than the order's row"
            assert change.mismatch == "amount" and row[0] == "pending"
            continue
        assert (fast_change, fast_row, fast_published) == (change, row, published), name
        assert change.before == "pending" and change.after != "pending", name
        assert row[4] == 0, "Stripe answered: the outage backoff starts over"
        if name == "paid":
            assert [(t, k, e["payment_intent_id"]) for t, k, e in published] == [
                ("OrderPaid", str(order_id), "pi_as_claimed")
            ]

    # Someone else changed the order after the claim, or leased it again: nothing is written, no event.
    cancelled = "UPDATE orders SET status = 'cancelled', payment_due_at = NULL, cancel_reason = 'buyer' WHERE id = $1"
    leased = "UPDATE orders SET payment_due_at = payment_due_at + interval '1 second' WHERE id = $1"
    scrubbed = "UPDATE orders SET ship_line1 = 'deleted' WHERE id = $1"
    for meanwhile, status in ((cancelled, "cancelled"), (leased, "pending"), (scrubbed, "pending")):
        fast = await _applied_after_the_claim(url, order_id, as_claimed(paid), meanwhile=meanwhile)
        assert fast[0] is None and fast[2] == [] and fast[1][:2] == (status, None), meanwhile
    # ... and the locked path then decides on the order as it is: the cancelled one stays cancelled, unpaid.
    locked = await _applied_after_the_claim(url, order_id, under_the_lock(paid), meanwhile=cancelled)
    assert locked[1][:2] == ("cancelled", "pi_as_claimed") and locked[2] == []
    # A write the decision does not read and the save does not touch (StockReserved heard for an order from the
    # allocation, which usually lands during the Stripe call) changes nothing for it, and is kept.
    heard = "UPDATE orders SET reservation_heard = true WHERE id = $1"
    change, row, published = await _applied_after_the_claim(url, order_id, as_claimed(paid), meanwhile=heard)
    assert change is not None and row[:2] == ("paid", "pi_as_claimed") and row[-1] is True
    assert [e[0] for e in published] == ["OrderPaid"]
