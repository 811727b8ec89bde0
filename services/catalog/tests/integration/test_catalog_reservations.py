"""catalog against the real broker and Postgres: reservations, dedupe, dead letters."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from tweetshop_contracts import OrderPaymentFailed, OrderPlaced, StockRejected, StockReleased, StockReserved, topics
from tweetshop_devstack.kafka_probe import events_of, publish_events, publish_raw, read_topic

# The test plays a checkout that asks catalog for every reservation (no allocation: test_catalog_allocations.py).
CATALOG_ENV = {"TWEETSHOP_ALLOCATION_UNITS": "0"}


def order_placed(product_id: str, quantity: int, order_id: uuid.UUID | None = None) -> OrderPlaced:
    return OrderPlaced(
        producer="test",
        correlation_id=f"corr-{uuid.uuid4()}",
        order_id=order_id or uuid.uuid4(),
        product_id=uuid.UUID(product_id),
        quantity=quantity,
        tweet_id=uuid.uuid4(),
        buyer_id="buyer-1",
        amount_minor=1200 * quantity,
        currency="EUR",
        unit_price_minor=1200,
    )


def listed_product(base_url: str, stock: int) -> dict[str, Any]:
    merchant = httpx.post(f"{base_url}/merchants", json={"handle": f"m{uuid.uuid4().hex[:8]}", "name": "Fancy"}).json()
    response = httpx.post(
        f"{base_url}/products",
        json={"merchant_id": merchant["id"], "title": "Mug", "price_minor": 1200, "currency": "EUR", "stock": stock},
        headers={"Authorization": f"Bearer {merchant['api_key']}"},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_the_same_order_event_delivered_twice_reserves_stock_once(
    service_process: Any, kafka_bootstrap: str
) -> None:
    catalog = service_process.start("catalog", CATALOG_ENV)
    ns = service_process.topic_namespace
    product = listed_product(catalog.base_url, stock=3)
    placed = order_placed(product["id"], 2)

    await publish_events(kafka_bootstrap, ns, placed, placed)
    records = await read_topic(
        kafka_bootstrap, ns + topics.CATALOG_RESERVATIONS, until=lambda rs: len(rs) >= 1, timeout=30
    )
    # Give a wrongly applied duplicate the time to show up before counting.
    await publish_events(kafka_bootstrap, ns, order_placed(product["id"], 1))
    records = await read_topic(kafka_bootstrap, ns + topics.CATALOG_RESERVATIONS, until=lambda rs: len(rs) >= 2)

    answers = [e for e in events_of(records, topics.CATALOG_RESERVATIONS) if e.order_id == placed.order_id]  # type: ignore[attr-defined]
    assert [type(e) for e in answers] == [StockReserved]
    assert answers[0].correlation_id == placed.correlation_id
    stock = httpx.get(f"{catalog.base_url}/products/{product['id']}").json()
    assert (stock["stock_available"], stock["stock_reserved"]) == (0, 3)


async def test_ordering_more_than_the_stock_is_rejected_and_a_failed_payment_releases_the_reservation(
    service_process: Any, kafka_bootstrap: str
) -> None:
    catalog = service_process.start("catalog", CATALOG_ENV)
    ns = service_process.topic_namespace
    product = listed_product(catalog.base_url, stock=2)
    too_many = order_placed(product["id"], 3)
    fits = order_placed(product["id"], 2)
    await publish_events(kafka_bootstrap, ns, too_many, fits)
    failed = OrderPaymentFailed(
        producer="test",
        correlation_id=fits.correlation_id,
        order_id=fits.order_id,
        product_id=fits.product_id,
        quantity=2,
        reason="card declined",
    )
    await publish_events(kafka_bootstrap, ns, failed, failed.model_copy(update={"event_id": uuid.uuid4()}))

    records = await read_topic(kafka_bootstrap, ns + topics.CATALOG_RESERVATIONS, until=lambda rs: len(rs) >= 3)
    by_order = {(type(e), e.order_id) for e in events_of(records, topics.CATALOG_RESERVATIONS)}  # type: ignore[attr-defined]
    assert (StockRejected, too_many.order_id) in by_order
    assert (StockReserved, fits.order_id) in by_order
    assert (StockReleased, fits.order_id) in by_order
    released = [e for e in events_of(records, topics.CATALOG_RESERVATIONS) if isinstance(e, StockReleased)]
    assert len(released) == 1, "a second failure event for the same order must not release twice"
    stock = httpx.get(f"{catalog.base_url}/products/{product['id']}").json()
    assert (stock["stock_available"], stock["stock_reserved"], stock["stock_sold"]) == (2, 0, 0)


async def test_a_poison_message_is_parked_on_the_dlq_and_the_partition_keeps_flowing(
    service_process: Any, kafka_bootstrap: str
) -> None:
    catalog = service_process.start("catalog", CATALOG_ENV)
    ns = service_process.topic_namespace
    product = listed_product(catalog.base_url, stock=5)
    good = order_placed(product["id"], 1)
    key = str(good.order_id).encode()  # the same key puts both on the same partition, poison first
    await publish_raw(kafka_bootstrap, ns + topics.CHECKOUT_ORDERS, b'{"event_type": "OrderPlaced", "oops"', key=key)
    await publish_raw(
        kafka_bootstrap,
        ns + topics.CHECKOUT_ORDERS,
        b'{"event_type": "OrderPlaced", "event_id": "not-a-uuid"}',
        key=key,
        headers={"correlation_id": "poison-2"},
    )
    await publish_events(kafka_bootstrap, ns, good)

    dlq = await read_topic(kafka_bootstrap, ns + topics.CHECKOUT_ORDERS + ".dlq", until=lambda rs: len(rs) >= 2)
    assert len(dlq) == 2
    assert dlq[0].value.startswith(b'{"event_type": "OrderPlaced", "oops"')
    assert dlq[0].key == key
    assert dlq[0].headers["dlq_original_topic"] == topics.CHECKOUT_ORDERS
    assert dlq[0].headers["dlq_consumer_group"] == ns + "catalog.orders"
    assert "dlq_error" in dlq[0].headers and dlq[0].headers["dlq_error"]
    assert dlq[1].headers["correlation_id"] == "poison-2"

    reservations = await read_topic(kafka_bootstrap, ns + topics.CATALOG_RESERVATIONS, until=lambda rs: len(rs) >= 1)
    assert [type(e) for e in events_of(reservations, topics.CATALOG_RESERVATIONS)] == [StockReserved]


async def test_product_changes_are_published_with_a_growing_version_and_only_by_their_merchant(
    service_process: Any, kafka_bootstrap: str
) -> None:
    catalog = service_process.start("catalog", CATALOG_ENV)
    ns = service_process.topic_namespace
    product = listed_product(catalog.base_url, stock=5)
    intruder = httpx.post(f"{catalog.base_url}/merchants", json={"handle": "intruder", "name": "X"}).json()
    url = f"{catalog.base_url}/products/{product['id']}"
    assert httpx.patch(url, json={"price_minor": 1}).status_code == 401
    forbidden = httpx.patch(url, json={"price_minor": 1}, headers={"Authorization": f"Bearer {intruder['api_key']}"})
    assert forbidden.status_code == 403
    assert httpx.get(url).json()["price_minor"] == 1200

    records = await read_topic(kafka_bootstrap, ns + topics.CATALOG_PRODUCTS, until=lambda rs: len(rs) >= 1)
    (listed,) = events_of(records, topics.CATALOG_PRODUCTS)
    assert listed.event_type == "ProductListed"
    assert str(listed.product_id) == product["id"]  # type: ignore[attr-defined]
    assert records[0].key == product["id"].encode()
    assert records[0].headers["event_type"] == "ProductListed"
    assert records[0].headers["correlation_id"] == listed.correlation_id
