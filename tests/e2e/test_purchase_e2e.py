"""One purchase through the four services as separate processes, on the real broker, database and Stripe server."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
import stripe
from tweetshop_contracts import topics
from tweetshop_devstack.kafka_probe import Record, events_of, read_topic
from tweetshop_devstack.reconciliation import TOPICS as ALL_TOPICS
from tweetshop_devstack.seed import order_body as seed_order_body
from tweetshop_devstack.services import DEV_STRIPE_API_KEY, DEV_STRIPE_WEBHOOK_SECRET
from tweetshop_devstack.testing import eventually

OPERATOR_KEY = "dev-operator-key"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def stack(service_process: Any) -> dict[str, str]:
    """The four services, each its own OS process, in one test database and one topic namespace."""
    started = [service_process.start(name, wait_ready=False) for name in ("catalog", "feed", "checkout", "tracking")]
    for service in started:  # they start side by side; each waits for its broker and database
        service.wait_ready()
    return {service.name: service.base_url for service in started}


def a_listed_product(stack: dict[str, str], stock: int, price_minor: int = 2500) -> tuple[dict[str, Any], str]:
    merchant = httpx.post(
        f"{stack['catalog']}/merchants", json={"handle": f"fancy{uuid.uuid4().hex[:6]}", "name": "Fancy"}
    )
    assert merchant.status_code == 201, merchant.text
    m = merchant.json()
    product = httpx.post(
        f"{stack['catalog']}/products",
        json={
            "merchant_id": m["id"],
            "title": "Fancy mug",
            "price_minor": price_minor,
            "currency": "EUR",
            "stock": stock,
        },
        headers=bearer(m["api_key"]),
    )
    assert product.status_code == 201, product.text
    return product.json(), m["api_key"]


def a_buyable_tweet(stack: dict[str, str], product: dict[str, Any], api_key: str) -> dict[str, Any]:
    def post() -> dict[str, Any] | None:
        r = httpx.post(
            f"{stack['feed']}/tweets",
            json={"merchant_id": product["merchant_id"], "text": "New mug, limited run", "product_id": product["id"]},
            headers=bearer(api_key),
        )
        if r.status_code == 503 and "retry-after" in r.headers:
            return None  # feed has not read the merchant or the product from catalog's topics yet
        assert r.status_code == 201, r.text
        return dict(r.json())

    tweet: dict[str, Any] = eventually(post, what="feed to know the product")
    assert tweet["buyable"] is True
    return tweet


def order_body(tweet: dict[str, Any], product: dict[str, Any], quantity: int, payment_method: str) -> dict[str, Any]:
    return seed_order_body(
        tweet["id"], product["id"], quantity=quantity, buyer_id="buyer-42", payment_method=payment_method
    )


def place_order(stack: dict[str, str], body: dict[str, Any], key: str) -> httpx.Response:
    """POST /orders, waiting while checkout has not read the product yet (404 unknown_product)."""

    def post() -> httpx.Response | None:
        r = httpx.post(f"{stack['checkout']}/orders", json=body, headers={"Idempotency-Key": key})
        if r.status_code == 404 and r.json().get("error") == "unknown_product":
            return None
        return r

    response: httpx.Response = eventually(post, what="checkout to know the product")
    return response


def order_status(stack: dict[str, str], order: dict[str, Any]) -> dict[str, Any]:
    r = httpx.get(f"{stack['checkout']}/orders/{order['id']}", headers=bearer(order["access_token"]))
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_for_status(stack: dict[str, str], order: dict[str, Any], wanted: str) -> dict[str, Any]:
    terminal = {"paid", "failed", "cancelled", "refunded"}

    def check() -> dict[str, Any] | None:
        current = order_status(stack, order)
        if current["status"] == wanted:
            return current
        assert current["status"] not in terminal - {wanted}, f"order ended {current}"
        return None

    result: dict[str, Any] = eventually(check, what=f"order {order['id']} to become {wanted}")
    return result


def payment_intents_of(stripe_base_url: str, order_id: str) -> list[Any]:
    client = stripe.StripeClient(DEV_STRIPE_API_KEY, base_addresses={"api": stripe_base_url})
    intents = client.v1.payment_intents.list(params={"limit": 100})
    return [
        pi for pi in intents.auto_paging_iter() if pi.metadata and pi.metadata.to_dict().get("order_id") == order_id
    ]


def test_a_buyer_pays_for_a_tweeted_product_and_follows_the_parcel(
    stack: dict[str, str], service_process: Any, kafka_bootstrap: str, stripe_base_url: str
) -> None:
    ns = service_process.topic_namespace
    product, api_key = a_listed_product(stack, stock=5)
    tweet = a_buyable_tweet(stack, product, api_key)

    key = str(uuid.uuid4())
    body = order_body(tweet, product, 2, "pm_card_visa")
    placed = place_order(stack, body, key)
    assert placed.status_code == 202, placed.text
    order = placed.json()
    assert order["status"] == "pending" and order["access_token"]

    again = httpx.post(f"{stack['checkout']}/orders", json=body, headers={"Idempotency-Key": key})
    assert again.status_code in (200, 202) and again.json()["id"] == order["id"], "same key, same order"

    paid = wait_for_status(stack, order, "paid")
    assert paid["amount_minor"] == 2 * 2500 and paid["currency"] == "EUR"
    assert paid["payment_intent_id"].startswith("pi_")
    intents = payment_intents_of(stripe_base_url, order["id"])
    assert [pi.status for pi in intents] == ["succeeded"], "exactly one charge"

    stock = eventually(
        lambda: (s := httpx.get(f"{stack['catalog']}/products/{product['id']}").json())["stock_reserved"] == 0 and s,
        what="the reservation to become a sale",
    )
    assert stock["stock_available"] == 3

    def buyers_shipments() -> list[dict[str, Any]] | None:
        # 404 until the shipment exists: only the holder of the order's token may learn it does.
        answer = httpx.get(
            f"{stack['tracking']}/shipments", params={"order_id": order["id"]}, headers=bearer(order["access_token"])
        )
        return answer.json() if answer.status_code == 200 else None

    shipments = eventually(buyers_shipments, what="a shipment for the paid order")
    assert len(shipments) == 1
    shipment = shipments[0]
    assert shipment["status"] == "label_created"
    tracking_url = eventually(lambda: order_status(stack, order).get("tracking_url"), what="tracking_url on the order")
    # The buyer's link opens the map page; the same page without the token, or with another, does not.
    assert httpx.get(tracking_url).status_code == 200
    page_url = f"{stack['tracking']}/track/{order['id']}"
    assert httpx.get(page_url).status_code == 401
    assert httpx.get(page_url, params={"token": "tso_not-the-buyer"}).status_code == 404

    token = httpx.post(f"{stack['tracking']}/shipments/{shipment['id']}/courier-token", headers=bearer(OPERATOR_KEY))
    assert token.status_code in (200, 201), token.text
    courier = token.json()["courier_token"]
    point = {"lat": 48.85, "lon": 2.35, "recorded_at": datetime.now(UTC).isoformat(), "speed": 7.5}
    posted = httpx.post(
        f"{stack['tracking']}/shipments/{shipment['id']}/locations", json=[point], headers=bearer(courier)
    )
    assert posted.status_code in (200, 201, 202), posted.text

    def seen_location() -> dict[str, Any] | None:
        rows = httpx.get(
            f"{stack['tracking']}/shipments", params={"order_id": order["id"]}, headers=bearer(order["access_token"])
        ).json()
        return rows[0] if rows and rows[0].get("last_location") else None

    located = eventually(seen_location, what="the courier's location on the shipment")
    assert located["last_location"]["lat"] == pytest.approx(48.85)

    # Every step is on the contract's topics, in the envelope, readable by any Kafka client.
    def on_topic(topic: str, *types: str) -> list[Record]:
        records: list[Record] = asyncio.run(
            read_topic(
                kafka_bootstrap,
                ns + topic,
                until=lambda rs: set(types) <= {r.headers.get("event_type") for r in rs},
                timeout=30,
            )
        )
        found = {r.headers.get("event_type") for r in records}
        assert set(types) <= found, f"{topic}: expected {types}, found {found}"
        for r, event in zip(records, events_of(records, topic), strict=True):
            assert r.headers["event_type"] == event.event_type
            assert r.headers["correlation_id"] == event.correlation_id
            assert r.key == event.key().encode()
        return records

    on_topic(topics.CATALOG_PRODUCTS, "ProductListed", "ProductUpdated")
    on_topic(topics.FEED_BUYABLE_TWEETS, "BuyableTweetPosted")
    orders = on_topic(topics.CHECKOUT_ORDERS, "OrderPlaced", "OrderPaid")
    on_topic(topics.CATALOG_RESERVATIONS, "StockReserved")
    on_topic(topics.TRACKING_SHIPMENTS, "ShipmentCreated")
    locations = on_topic(topics.TRACKING_LOCATIONS, "ShipmentLocationUpdated")
    order_events = [e for e in events_of(orders, topics.CHECKOUT_ORDERS) if str(e.order_id) == order["id"]]  # type: ignore[attr-defined]
    assert [e.event_type for e in order_events] == ["OrderPlaced", "OrderPaid"], "one order, no duplicates"
    correlation = order_events[0].correlation_id
    assert all(e.correlation_id == correlation for e in order_events)
    assert events_of(locations, topics.TRACKING_LOCATIONS)[0].correlation_id == correlation


def test_a_declined_card_fails_the_order_with_a_reason_and_releases_the_stock(
    stack: dict[str, str], stripe_base_url: str
) -> None:
    product, api_key = a_listed_product(stack, stock=3)
    tweet = a_buyable_tweet(stack, product, api_key)
    placed = place_order(stack, order_body(tweet, product, 2, "pm_card_visa_chargeDeclined"), str(uuid.uuid4()))
    assert placed.status_code == 202, placed.text
    failed = wait_for_status(stack, placed.json(), "failed")
    assert failed["failure_reason"]
    assert eventually(
        lambda: (
            httpx.get(f"{stack['catalog']}/products/{product['id']}").json()
            == {**product, "stock_available": 3, "stock_reserved": 0, "version": 3}
        ),
        what="the reserved stock to be released",
    )
    assert all(pi.status != "succeeded" for pi in payment_intents_of(stripe_base_url, placed.json()["id"]))


def test_ordering_more_than_the_stock_is_refused_and_nothing_is_charged(
    stack: dict[str, str], stripe_base_url: str
) -> None:
    product, api_key = a_listed_product(stack, stock=1)
    tweet = a_buyable_tweet(stack, product, api_key)
    refused = place_order(stack, order_body(tweet, product, 2, "pm_card_visa"), str(uuid.uuid4()))
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "insufficient_stock"
    assert httpx.get(f"{stack['catalog']}/products/{product['id']}").json()["stock_available"] == 1

    bad = httpx.post(f"{stack['checkout']}/orders", json={"quantity": -1}, headers={"Idempotency-Key": "k"})
    assert bad.status_code == 422 and bad.json()["error"] == "validation_error"


# --- secrets and roles: every credential in play, none of them anywhere it should not be --------------------------

OWN_OPERATOR_KEY = "e2e-operator-key-0f3c9a"


@pytest.fixture
def processes(service_process: Any) -> dict[str, Any]:
    env = {"TWEETSHOP_OPERATOR_KEY": OWN_OPERATOR_KEY}
    started = [
        service_process.start(name, env, wait_ready=False) for name in ("catalog", "feed", "checkout", "tracking")
    ]
    for service in started:
        service.wait_ready()
    return {service.name: service for service in started}


def test_no_secret_reaches_a_log_a_topic_or_another_callers_answer(
    processes: dict[str, Any], service_process: Any, kafka_bootstrap: str
) -> None:
    stack = {name: s.base_url for name, s in processes.items()}
    product, api_key = a_listed_product(stack, stock=3)
    tweet = a_buyable_tweet(stack, product, api_key)
    placed = place_order(stack, order_body(tweet, product, 1, "pm_card_visa"), str(uuid.uuid4()))
    assert placed.status_code == 202, placed.text
    order = placed.json()
    wait_for_status(stack, order, "paid")

    def shipment() -> Any:
        answer = httpx.get(
            f"{stack['tracking']}/shipments", params={"order_id": order["id"]}, headers=bearer(order["access_token"])
        )
        return answer.json() if answer.status_code == 200 else None

    [shipped] = eventually(shipment, what="the shipment")
    issued = httpx.post(
        f"{stack['tracking']}/shipments/{shipped['id']}/courier-token", headers=bearer(OWN_OPERATOR_KEY)
    )
    courier_token = issued.json()["courier_token"]
    point = {"lat": 48.85, "lon": 2.35, "recorded_at": datetime.now(UTC).isoformat()}
    posted = httpx.post(
        f"{stack['tracking']}/shipments/{shipped['id']}/locations", json=[point], headers=bearer(courier_token)
    )
    assert posted.status_code == 200, posted.text

    rotated = httpx.post(f"{stack['catalog']}/merchants/{product['merchant_id']}/api-key", headers=bearer(api_key))
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["api_key"]

    def refunded() -> httpx.Response | None:
        # The old key stops working in checkout once it has read the rotation; the new one refunds.
        answer = httpx.post(f"{stack['checkout']}/orders/{order['id']}/refund", headers=bearer(new_key))
        return None if answer.status_code == 403 else answer

    refund = eventually(refunded, what="checkout to accept the rotated key")
    assert refund.status_code == 200, refund.text
    assert refund.json()["tracking_url"] is None  # the merchant's answer carries no link with its key in it
    old = httpx.post(f"{stack['checkout']}/orders/{order['id']}/refund", headers=bearer(api_key))
    assert old.status_code == 403
    reconcile = httpx.post(f"{stack['checkout']}/ops/reconcile", headers=bearer(OWN_OPERATOR_KEY))
    assert reconcile.status_code == 200, reconcile.text
    assert httpx.post(f"{stack['checkout']}/ops/reconcile", headers=bearer(api_key)).status_code == 403
    assert httpx.post(f"{stack['checkout']}/ops/reconcile").status_code == 401

    secrets = {
        "merchant API key": api_key,
        "rotated merchant API key": new_key,
        "order access token": order["access_token"],
        "courier token": courier_token,
        "operator key": OWN_OPERATOR_KEY,
        "Stripe secret key": DEV_STRIPE_API_KEY,
        "Stripe webhook secret": DEV_STRIPE_WEBHOOK_SECRET,
    }

    # What a caller sees of someone else's credentials: the buyer's order view, the merchant's refund answer.
    buyer_view = httpx.get(f"{stack['checkout']}/orders/{order['id']}", headers=bearer(order["access_token"])).text
    leaks = [
        f"{what} in the buyer's order view"
        for what, value in secrets.items()
        if what != "order access token" and value in buyer_view
    ]
    leaks += [f"{what} in the refund answer" for what, value in secrets.items() if value in refund.text]

    for name, service in processes.items():
        log = service.log_path.read_text(encoding="utf-8", errors="replace")
        if name == "checkout":  # the scan reads the real log: it holds the purchase it must not leak from
            assert "payment step applied" in log
        leaks += [f"{what} in {name}'s log" for what, value in secrets.items() if value in log]

    ns = service_process.topic_namespace
    for topic in ALL_TOPICS:  # every v1 topic
        records = asyncio.run(read_topic(kafka_bootstrap, ns + topic, timeout=10))
        blob = "".join(r.value.decode(errors="replace") + "".join(r.headers.values()) for r in records)
        leaks += [f"{what} on {topic}" for what, value in secrets.items() if value in blob]
    assert leaks == []


def test_each_services_role_reads_only_its_own_schema(processes: dict[str, Any]) -> None:
    async def probe() -> list[str]:
        wrong: list[str] = []
        for name, service in processes.items():
            conn = await asyncpg.connect(service.database_url)
            try:
                assert await conn.fetchval("SELECT count(*) FROM outbox") >= 0  # its own tables: fine
                for other, table in (
                    ("catalog", "products"),
                    ("checkout", "orders"),
                    ("feed", "tweets"),
                    ("tracking", "shipments"),
                ):
                    if other == name:
                        continue
                    try:
                        await conn.fetch(f"SELECT * FROM {other}.{table} LIMIT 1")
                        wrong.append(f"{name} read {other}.{table}")
                    except asyncpg.InsufficientPrivilegeError:
                        pass
            finally:
                await conn.close()
        return wrong

    assert asyncio.run(probe()) == []


def test_a_cheap_payment_naming_a_waiting_order_neither_pays_nor_ships_it(
    stack: dict[str, str], stripe_base_url: str
) -> None:
    """The attack on payment integrity, end to end: a $2,500 order waits for 3-D Secure; someone makes and confirms
    a $1 PaymentIntent with ``metadata[order_id]`` of that order, and Stripe (localstripe) signs and delivers its
    ``payment_intent.succeeded`` to checkout. The order stays unpaid and unshipped, the mismatch is counted, and the
    order's own payment still completes it."""
    product, api_key = a_listed_product(stack, stock=3, price_minor=250_000)
    tweet = a_buyable_tweet(stack, product, api_key)
    client = stripe.StripeClient(DEV_STRIPE_API_KEY, base_addresses={"api": stripe_base_url})
    card = {"number": "4000002760003184", "exp_month": 12, "exp_year": 2030, "cvc": "123"}  # asks for 3-D Secure
    method = client.v1.payment_methods.create(params={"type": "card", "card": card})  # type: ignore[typeddict-item]
    order = place_order(stack, order_body(tweet, product, 1, method.id), str(uuid.uuid4())).json()
    waiting = wait_for_status(stack, order, "requires_action")

    forged = client.v1.payment_intents.create(
        params={
            "amount": 100,
            "currency": "eur",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "payment_method_types": ["card"],
            "metadata": {"order_id": order["id"]},
        }
    )
    assert forged.status == "succeeded" and forged.id != waiting["payment_intent_id"]

    def mismatch_counted() -> bool | None:
        text = httpx.get(f"{stack['checkout']}/metrics").text
        line = 'checkout_payment_mismatches_total{reason="foreign_intent",source="webhook"} '
        return True if any(row.startswith(line) and float(row[len(line) :]) >= 1 for row in text.splitlines()) else None

    eventually(mismatch_counted, what="checkout to receive Stripe's webhook of the foreign intent and refuse it")
    now = order_status(stack, order)
    assert (now["status"], now["payment_intent_id"], now["shipment_id"]) == (
        "requires_action",
        waiting["payment_intent_id"],
        None,
    )

    # The buyer completes 3-D Secure: the order is paid by its own intent, for its own price, and ships.
    authenticated = httpx.post(
        f"{stripe_base_url}/v1/payment_intents/{waiting['payment_intent_id']}/_authenticate",
        data={"client_secret": waiting["client_secret"], "success": "true"},
        auth=(DEV_STRIPE_API_KEY, ""),
    )
    assert authenticated.status_code == 200, authenticated.text
    paid = wait_for_status(stack, order, "paid")
    assert paid["payment_intent_id"] == waiting["payment_intent_id"]
    intents = {pi.id: pi for pi in payment_intents_of(stripe_base_url, order["id"])}
    assert intents[paid["payment_intent_id"]].amount == 250_000
