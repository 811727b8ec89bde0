"""Allocations against the real catalog process, broker and Postgres: a listing allocates units to checkout, an
order checkout reserved from them is recorded (never refused) and announced as any other, stock set below the
allocation takes it back, and what checkout gives back becomes reservable again."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from tweetshop_contracts import (
    OrderPlaced,
    StockAllocated,
    StockAllocationReturned,
    StockRejected,
    StockReserved,
    topics,
)
from tweetshop_devstack.kafka_probe import events_of, publish_events, read_topic
from tweetshop_devstack.testing import eventually_async, fetch

UNITS = 4  # allocated at a time (topped up once down to 2)


def an_order(product_id: uuid.UUID, generation: int | None, quantity: int = 1) -> OrderPlaced:
    return OrderPlaced(
        producer="checkout",
        correlation_id=f"corr-{uuid.uuid4()}",
        order_id=uuid.uuid4(),
        product_id=product_id,
        quantity=quantity,
        tweet_id=uuid.uuid4(),
        buyer_id=f"buyer-{uuid.uuid4().hex[:8]}",
        amount_minor=2500 * quantity,
        currency="EUR",
        unit_price_minor=2500,
        allocation_generation=generation,
    )


async def test_allocate_record_take_back_and_return(service_process: Any, kafka_bootstrap: str) -> None:
    catalog = service_process.start("catalog", {"TWEETSHOP_ALLOCATION_UNITS": str(UNITS)})
    namespace = service_process.topic_namespace
    merchant = httpx.post(
        f"{catalog.base_url}/merchants", json={"handle": f"m{uuid.uuid4().hex[:8]}", "name": "Fancy"}
    ).json()
    key = {"Authorization": f"Bearer {merchant['api_key']}"}
    created = httpx.post(
        f"{catalog.base_url}/products",
        json={"merchant_id": merchant["id"], "title": "Mug", "price_minor": 2500, "currency": "EUR", "stock": 10},
        headers=key,
    )
    assert created.status_code == 201, created.text
    product_id = uuid.UUID(created.json()["id"])

    async def allocations(count: int) -> list[StockAllocated]:
        records = await read_topic(
            kafka_bootstrap, namespace + topics.CATALOG_ALLOCATIONS, until=lambda rs: len(rs) >= count, timeout=60
        )
        found = [e for e in events_of(records, topics.CATALOG_ALLOCATIONS) if isinstance(e, StockAllocated)]
        return [e for e in found if e.product_id == product_id]

    async def stock() -> dict[str, Any]:
        (row,) = await fetch(
            catalog.database_url,
            "SELECT stock_available, stock_allocated, stock_returning, stock_reserved, allocation_generation "
            "FROM products WHERE id = $1",
            product_id,
        )
        return dict(row)

    # Listed: 4 of the 10 units allocated to checkout, all 10 still on sale.
    (first,) = await allocations(1)
    assert (first.generation, first.units) == (0, UNITS)
    assert httpx.get(f"{catalog.base_url}/products/{product_id}").json()["stock_available"] == 10

    # Checkout took 3 of them for an order: recorded and announced; the allocation, down to 1, is topped up to 4.
    order = an_order(product_id, generation=0, quantity=3)
    await publish_events(kafka_bootstrap, namespace, order)
    records = await read_topic(
        kafka_bootstrap, namespace + topics.CATALOG_RESERVATIONS, until=lambda rs: len(rs) >= 1, timeout=60
    )
    (reserved,) = events_of(records, topics.CATALOG_RESERVATIONS)
    assert isinstance(reserved, StockReserved) and reserved.order_id == order.order_id
    top_up = (await allocations(2))[1]
    assert (top_up.generation, top_up.units) == (0, 3)
    assert await stock() == {
        "stock_available": 7,
        "stock_allocated": 4,
        "stock_returning": 0,
        "stock_reserved": 3,
        "allocation_generation": 0,
    }

    # The merchant sets the stock to 2, below the 4 allocated: generation 1 takes them back, with nothing
    # allocated anew (none of the 2 is free while checkout may have sold the 4).
    patched = httpx.patch(f"{catalog.base_url}/products/{product_id}", json={"stock": 2}, headers=key)
    assert patched.status_code == 200, patched.text
    revoked = (await allocations(3))[2]
    assert (revoked.generation, revoked.units) == (1, 0)
    assert (await stock())["stock_returning"] == 4

    # Checkout had sold 1 of generation 0 before it heard, and gives the other 3 back: 1 unit is free again, and
    # allocated to checkout in generation 1.
    await publish_events(
        kafka_bootstrap,
        namespace,
        an_order(product_id, generation=0),
        StockAllocationReturned(producer="checkout", correlation_id="r", product_id=product_id, generation=0, units=3),
    )

    async def settled() -> dict[str, Any] | None:
        now = await stock()
        return now if now["stock_returning"] == 0 and now["stock_reserved"] == 4 else None

    assert await eventually_async(settled, what="the order and the returned units applied") == {
        "stock_available": 1,
        "stock_allocated": 1,
        "stock_returning": 0,
        "stock_reserved": 4,
        "allocation_generation": 1,
    }
    fresh = (await allocations(4))[3]
    assert (fresh.generation, fresh.units) == (1, 1)

    # Orders the allocation they name cannot hold (forged: checkout only takes units catalog counted out) are not
    # recorded as reserved from it: catalog decides each as any other order, and refuses it (none free). A
    # generation never issued; more units than the one in force has out; a taken-back one with nothing out.
    forged = [an_order(product_id, generation=7), an_order(product_id, 1, quantity=2), an_order(product_id, 0)]
    await publish_events(kafka_bootstrap, namespace, *forged)

    def answers(records: list[Any]) -> dict[uuid.UUID, Any]:
        wanted = {f.order_id for f in forged}
        events = events_of(records, topics.CATALOG_RESERVATIONS)
        return {e.order_id: e for e in events if getattr(e, "order_id", None) in wanted}

    records = await read_topic(
        kafka_bootstrap,
        namespace + topics.CATALOG_RESERVATIONS,
        until=lambda rs: len(answers(rs)) == len(forged),
        timeout=60,
    )
    assert all(isinstance(answer, StockRejected) for answer in answers(records).values()), answers(records)
    assert await stock() == {
        "stock_available": 1,
        "stock_allocated": 1,
        "stock_returning": 0,
        "stock_reserved": 4,
        "allocation_generation": 1,
    }

    # The merchant sets 0 (generation 2 takes back generation 1's unit), then 2 (generation 2 is granted the one
    # unit that is free while the other may still be sold), then 1 (kept: it holds the one allocated). Checkout had
    # sold generation 1's unit untold: its order takes the last unit of stock, and generation 2's unit is now beyond
    # the stock. Generation 3 takes it back (announced), rather than catalog forgetting a unit checkout still holds.
    for units in (0, 2, 1):
        patched = httpx.patch(f"{catalog.base_url}/products/{product_id}", json={"stock": units}, headers=key)
        assert patched.status_code == 200, patched.text
    granted = (await allocations(6))[5]
    assert (granted.generation, granted.units) == (2, 1)
    await publish_events(kafka_bootstrap, namespace, an_order(product_id, generation=1))
    taken_back = (await allocations(7))[6]
    assert (taken_back.generation, taken_back.units) == (3, 0)
    # Checkout hears generation 3 and gives generation 2's unit back: nothing is out, nothing was oversold.
    await publish_events(
        kafka_bootstrap,
        namespace,
        StockAllocationReturned(producer="checkout", correlation_id="r2", product_id=product_id, generation=2, units=1),
    )

    async def all_back() -> dict[str, Any] | None:
        now = await stock()
        return now if now["stock_returning"] == 0 and now["allocation_generation"] == 3 else None

    assert await eventually_async(all_back, what="generation 2's unit given back") == {
        "stock_available": 0,
        "stock_allocated": 0,
        "stock_returning": 0,
        "stock_reserved": 5,
        "allocation_generation": 3,
    }
