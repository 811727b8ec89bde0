"""Hostile messages on every topic a service consumes: it never crashes, never stalls, parks what it must.

The rule each test enforces (from ``tweetshop_platform.consumer.ReliableSubscriber``), per message published:

- it cannot be decoded with the v1 contract (garbage, not an object, wrong types, missing envelope, huge or
  non-finite values, a tombstone...): it is on ``<topic>.dlq`` exactly once, byte for byte (or, when the copy
  is too large to publish, cut and marked ``dlq_value_truncated_from``), with its key, the error and
  ``dlq_attempts == 1`` (retrying cannot help);
- it is a well-formed object of an event type the topic does not define: skipped, never parked;
- it is a valid event: applied (its event_id is in the consumer group's inbox, duplicates included), or, if
  its odd but schema-valid values make the handler fail (an INT column and a 2**31 stock...), parked after
  exactly the bounded retries (at once for a ``PermanentError`` or a value the database cannot store) and
  not applied; silently dropped never.
  The sentinels and the ordered scenarios (duplicates, out-of-order events) must be applied, never parked;
- nothing else is on the DLQ, nothing but what the test published is on the consumed topics (no replies to
  a ``reply_to`` header), the process still runs, ``/healthz`` answers 200, every consumer group commits
  exactly to the end of every partition, and each topic's sentinel (published last) has its visible effect.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
from tweetshop_contracts import (
    BuyableTweetPosted,
    BuyerCredentialIssued,
    BuyerCredentialsRevoked,
    BuyerDeleted,
    Envelope,
    MerchantRegistered,
    OrderCancelled,
    OrderPaid,
    OrderPlaced,
    ProductListed,
    ProductUpdated,
    ShipmentCreated,
    ShipmentStatusChanged,
    StockRejected,
    StockReserved,
    topics,
)

Fuzz = Any  # conftest.TopicFuzz (a conftest cannot be imported under --import-mode=importlib)


def copy_of(message: Envelope, **fields: Any) -> Envelope:
    return message.model_copy(update=fields)


def later_state(fuzz: Fuzz, listed: Envelope, **changes: Any) -> Envelope:
    """The same product's ProductUpdated with ``changes`` (a higher version: readers keep the newest)."""
    state = {**listed.model_dump(), "event_id": uuid.uuid4(), "event_type": "ProductUpdated", **changes}
    return fuzz.event(ProductUpdated, **state)  # type: ignore[no-any-return]


async def test_catalog_parks_hostile_orders_and_still_reserves_stock_for_the_good_order_behind_them(
    topic_fuzz: Callable[..., Fuzz],
) -> None:
    fuzz = topic_fuzz("catalog", {topics.CHECKOUT_ORDERS: "catalog.orders"})
    async with httpx.AsyncClient(base_url=fuzz.service.base_url, timeout=10) as http:
        registered = await http.post("/merchants", json={"handle": "fuzzshop", "name": "Fuzz"})
        assert registered.status_code == 201, registered.text
        merchant = registered.json()
        auth = {"Authorization": f"Bearer {merchant['api_key']}"}
        body = {"merchant_id": merchant["id"], "title": "Mug", "price_minor": 4900, "currency": "EUR", "stock": 5}
        listed = await http.post("/products", json=body, headers=auth)
        assert listed.status_code == 201, listed.text
    pid = uuid.UUID(listed.json()["id"])
    placed = fuzz.event(OrderPlaced, product_id=pid, quantity=1, amount_minor=4900, unit_price_minor=4900)
    paid_first = fuzz.event(OrderPaid, order_id=placed.order_id, product_id=pid, quantity=1)  # type: ignore[attr-defined]
    ghost = fuzz.event(OrderCancelled, product_id=pid)  # an order catalog never saw
    sentinel = fuzz.event(OrderPlaced, product_id=pid, quantity=1, amount_minor=4900, unit_price_minor=4900)
    # Out of order (paid before placed: nothing to sell yet), then the same OrderPlaced twice.
    await fuzz.run([paid_first, ghost, placed, placed], [sentinel])

    async with httpx.AsyncClient(base_url=fuzz.service.base_url, timeout=10) as http:
        stock = (await http.get(f"/products/{pid}")).json()
    assert (stock["stock_available"], stock["stock_reserved"]) == (3, 2), stock  # placed once, and the sentinel
    reservations = await fuzz.fetch(
        "SELECT order_id, status FROM catalog.reservations WHERE order_id = ANY($1::uuid[])",
        [placed.order_id, sentinel.order_id],  # type: ignore[attr-defined]
    )
    assert sorted(r["status"] for r in reservations) == ["reserved", "reserved"]


async def test_feed_parks_hostile_merchant_and_product_events_and_keeps_its_read_models_current(
    topic_fuzz: Callable[..., Fuzz],
) -> None:
    fuzz = topic_fuzz(
        "feed",
        {
            topics.CATALOG_MERCHANTS: "feed.merchants",
            topics.CATALOG_PRODUCTS: "feed.products",
            topics.CHECKOUT_BUYERS: "feed.buyers",
        },
    )
    merchant = fuzz.event(MerchantRegistered, merchant_id=uuid.uuid4(), handle="fuzz_twice")
    listed = fuzz.event(ProductListed, product_id=uuid.uuid4(), version=1, price_minor=4900)
    newer_first = later_state(fuzz, listed, version=2, price_minor=999)
    # A buyer's credential revoked before its issue arrives (kept revoked), and a buyer deleted before a late issue.
    revoked_buyer, deleted_buyer, sentinel_buyer = (f"ba_{uuid.uuid4().hex}" for _ in range(3))
    revoked_hash, late_hash, sentinel_hash = (uuid.uuid4().hex * 2 for _ in range(3))
    revoked_first = fuzz.event(BuyerCredentialsRevoked, buyer_id=revoked_buyer, credential_sha256s=[revoked_hash])
    issued_late = fuzz.event(BuyerCredentialIssued, buyer_id=revoked_buyer, credential_sha256=revoked_hash)
    deleted = fuzz.event(BuyerDeleted, buyer_id=deleted_buyer)
    issued_after_deletion = fuzz.event(BuyerCredentialIssued, buyer_id=deleted_buyer, credential_sha256=late_hash)
    sentinel_merchant = fuzz.event(MerchantRegistered, merchant_id=uuid.uuid4(), handle="fuzz_sentinel")
    sentinel_product = fuzz.event(ProductListed, product_id=uuid.uuid4(), version=1, title="Sentinel")
    sentinel_credential = fuzz.event(BuyerCredentialIssued, buyer_id=sentinel_buyer, credential_sha256=sentinel_hash)
    await fuzz.run(
        [merchant, merchant, newer_first, listed, revoked_first, issued_late, deleted, issued_after_deletion],
        [sentinel_merchant, sentinel_product, sentinel_credential],
    )

    merchants = await fuzz.fetch(
        "SELECT handle FROM feed.merchants WHERE id = ANY($1::uuid[])",
        [merchant.merchant_id, sentinel_merchant.merchant_id],  # type: ignore[attr-defined]
    )
    assert sorted(r["handle"] for r in merchants) == ["fuzz_sentinel", "fuzz_twice"]
    products = await fuzz.fetch(
        "SELECT id, version, price_minor, title FROM feed.products WHERE id = ANY($1::uuid[])",
        [listed.product_id, sentinel_product.product_id],  # type: ignore[attr-defined]
    )
    by_id = {r["id"]: r for r in products}
    assert (by_id[listed.product_id]["version"], by_id[listed.product_id]["price_minor"]) == (2, 999)  # type: ignore[attr-defined]
    assert by_id[sentinel_product.product_id]["title"] == "Sentinel"  # type: ignore[attr-defined]
    credentials = await fuzz.fetch(
        "SELECT credential_sha256, buyer_id, revoked FROM feed.buyer_credentials WHERE credential_sha256 = ANY($1)",
        [revoked_hash, late_hash, sentinel_hash],
    )
    assert {(r["credential_sha256"], r["buyer_id"], r["revoked"]) for r in credentials} == {
        (revoked_hash, revoked_buyer, True),  # the late issue did not bring it back
        (sentinel_hash, sentinel_buyer, False),
    }, "a credential issued after its buyer's deletion is not taken"


async def test_checkout_parks_hostile_events_on_all_four_topics_and_still_applies_the_good_ones(
    topic_fuzz: Callable[..., Fuzz],
) -> None:
    fuzz = topic_fuzz(
        "checkout",
        {
            topics.CATALOG_PRODUCTS: "checkout.products",
            topics.FEED_BUYABLE_TWEETS: "checkout.tweets",
            topics.CATALOG_RESERVATIONS: "checkout.reservations",
            topics.TRACKING_SHIPMENTS: "checkout.shipments",
        },
    )
    listed = fuzz.event(ProductListed, product_id=uuid.uuid4(), version=1, price_minor=4900)
    newer_first = later_state(fuzz, listed, version=2, price_minor=999)
    tweet = fuzz.event(BuyableTweetPosted, tweet_id=uuid.uuid4())
    unknown_order = uuid.uuid4()
    rejected = fuzz.event(StockRejected, order_id=unknown_order)
    reserved = fuzz.event(StockReserved, order_id=unknown_order)
    shipment = uuid.uuid4()
    moved_first = fuzz.event(ShipmentStatusChanged, shipment_id=shipment, order_id=unknown_order)
    created = fuzz.event(ShipmentCreated, shipment_id=shipment, order_id=unknown_order)
    sentinels = [
        fuzz.event(ProductListed, product_id=uuid.uuid4(), version=1, title="Sentinel"),
        fuzz.event(BuyableTweetPosted, tweet_id=uuid.uuid4()),
        fuzz.event(StockRejected, order_id=uuid.uuid4()),  # not StockReleased: checkout ignores it (no inbox row)
        fuzz.event(ShipmentCreated, shipment_id=uuid.uuid4(), order_id=uuid.uuid4()),
    ]
    await fuzz.run([newer_first, listed, tweet, tweet, rejected, reserved, moved_first, created], sentinels)

    products = await fuzz.fetch(
        "SELECT id, version, price_minor FROM checkout.products WHERE id = ANY($1::uuid[])",
        [listed.product_id, sentinels[0].product_id],  # type: ignore[attr-defined]
    )
    by_id = {r["id"]: (r["version"], r["price_minor"]) for r in products}
    assert by_id[listed.product_id] == (2, 999)  # type: ignore[attr-defined]
    assert sentinels[0].product_id in by_id  # type: ignore[attr-defined]
    tweets = await fuzz.fetch(
        "SELECT tweet_id FROM checkout.buyable_tweets WHERE tweet_id = ANY($1::uuid[])",
        [tweet.tweet_id, sentinels[1].tweet_id],  # type: ignore[attr-defined]
    )
    assert len(tweets) == 2
    for topic, sentinel in zip(list(fuzz.groups)[2:], sentinels[2:], strict=True):
        assert sentinel.event_id in await fuzz.inbox(topic), f"the sentinel on {topic} was not applied"


async def test_tracking_parks_hostile_orders_and_still_ships_every_paid_order_exactly_once(
    topic_fuzz: Callable[..., Fuzz],
) -> None:
    fuzz = topic_fuzz("tracking", {topics.CHECKOUT_ORDERS: "tracking.orders"})  # ignores OrderPlaced, …Failed
    cancelled_first = fuzz.event(OrderCancelled, order_id=uuid.uuid4())
    paid_after = fuzz.event(OrderPaid, order_id=cancelled_first.order_id)  # type: ignore[attr-defined]
    paid = fuzz.event(OrderPaid, order_id=uuid.uuid4())
    redelivered = copy_of(paid, event_id=uuid.uuid4())  # the same fact under another event_id
    sentinel = fuzz.event(OrderPaid, order_id=uuid.uuid4())
    await fuzz.run([cancelled_first, paid_after, paid, paid, redelivered], [sentinel])

    orders = [paid_after.order_id, paid.order_id, sentinel.order_id]  # type: ignore[attr-defined]

    async def shipped() -> bool:
        rows = await fuzz.fetch(
            "SELECT order_id, count(*) AS n FROM tracking.shipments WHERE order_id = ANY($1::uuid[]) GROUP BY order_id",
            orders,
        )
        return sorted((r["order_id"], r["n"]) for r in rows) == sorted((o, 1) for o in orders)

    await fuzz.eventually(shipped, "one shipment for each paid order, the sentinel's included", timeout=10)
