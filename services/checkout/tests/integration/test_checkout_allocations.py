"""Orders reserved from checkout's allocation (catalog.allocations.v1), against the real checkout process, broker,
Postgres and Stripe server, with the test playing catalog: such an order is paid with no StockReserved at all, takes
its units in its own transaction exactly once per Idempotency-Key, and orders beyond the allocation go to catalog
as before. A higher generation replaces the allocation, and what checkout had left goes back to catalog."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from checkout import handlers
from checkout.usecases import reservations
from tweetshop_contracts import (
    Destination,
    Envelope,
    OrderPlaced,
    ProductListed,
    ShipmentCreated,
    ShipmentStatusChanged,
    StockAllocationReturned,
    StockRejected,
    StockReserved,
    topics,
)
from tweetshop_devstack.kafka_probe import events_of, read_topic
from tweetshop_devstack.testing import metric_value
from tweetshop_platform import outbox

if TYPE_CHECKING:
    from conftest import Checkout


async def units_left(checkout: Checkout, product_id: uuid.UUID) -> int | None:
    rows = await checkout.sql(
        """SELECT (SELECT count(*) FROM stock_allocation_units u
                   WHERE u.product_id = a.product_id AND u.generation = a.generation) AS units_left
           FROM stock_allocations a WHERE a.product_id = $1""",
        product_id,
    )
    return rows[0]["units_left"] if rows else None


async def handed_over(checkout: Checkout) -> float:
    async with checkout.http() as http:
        return metric_value((await http.get("/metrics")).text, "checkout_payments_handed_over_total")


async def test_an_order_from_the_allocation_is_paid_without_asking_catalog(checkout: Checkout) -> None:
    product = await checkout.list_product(stock=5)
    await checkout.allocate(product, units=2, generation=3)
    handed_before = await handed_over(checkout)
    placed = [await checkout.place(checkout.order_body(product.product_id)) for _ in range(3)]
    assert [p.status_code for p in placed] == [202, 202, 202], [p.text for p in placed]
    first, second, beyond = (p.json() for p in placed)
    placed_json = [first, second]

    # The two the allocation covered are paid with nothing from catalog; their OrderPlaced tell catalog so. Each
    # POST placed its order leased to its process's payment worker and handed it over: no claim, one attempt.
    for order in (first, second):
        await checkout.until_status(order, "paid")
        events = await checkout.order_events(order["id"], until=lambda es: len(es) >= 2)
        (placed_event,) = [e for e in events if isinstance(e, OrderPlaced)]
        assert placed_event.allocation_generation == 3
    assert await units_left(checkout, product.product_id) == 0
    assert await handed_over(checkout) == handed_before + 2
    attempts = await checkout.sql(
        "SELECT payment_attempts FROM orders WHERE id = ANY($1::uuid[])", [uuid.UUID(o["id"]) for o in placed_json]
    )
    assert [r["payment_attempts"] for r in attempts] == [1, 1]

    # The third waits for catalog, as every order did before allocations, and is charged once it reserves.
    (third_placed,) = [
        e
        for e in await checkout.order_events(beyond["id"], until=lambda es: len(es) >= 1)
        if isinstance(e, OrderPlaced)
    ]
    assert third_placed.allocation_generation is None
    await asyncio.sleep(1)
    assert (await checkout.get_order(beyond["id"], beyond["access_token"]))["status"] == "pending"
    await checkout.reserve(beyond, product)
    await checkout.until_status(beyond, "paid")
    assert [len(await checkout.stripe_intents_for(o["id"])) for o in (first, second, beyond)] == [1, 1, 1]


async def test_the_same_key_at_once_takes_one_unit(checkout: Checkout) -> None:
    product = await checkout.list_product(stock=5)
    await checkout.allocate(product, units=3)
    body, key = checkout.order_body(product.product_id), str(uuid.uuid4())
    twins = await asyncio.gather(*(checkout.place(body, key=key) for _ in range(6)))
    assert {t.json()["id"] for t in twins} == {twins[0].json()["id"]}
    assert await units_left(checkout, product.product_id) == 2


async def test_the_allocation_answers_even_when_the_copy_of_the_stock_says_sold_out(checkout: Checkout) -> None:
    # Catalog's ProductUpdated may come later than its StockAllocated: the allocation's units are certainly there.
    product = await checkout.list_product(stock=0)
    await checkout.allocate(product, units=1)
    order = await checkout.place(checkout.order_body(product.product_id))
    assert order.status_code == 202, order.text
    await checkout.until_status(order.json(), "paid")
    refused = await checkout.place(checkout.order_body(product.product_id))
    assert refused.status_code == 409 and refused.json()["error"] == "insufficient_stock", refused.text


async def test_a_higher_generation_replaces_the_allocation_and_the_rest_goes_back(checkout: Checkout) -> None:
    product = await checkout.list_product(stock=20)
    await checkout.allocate(product, units=4, generation=1)
    await checkout.allocate(product, units=0, generation=2)  # catalog took generation 1 back
    await checkout.allocate(product, units=5, generation=1)  # a stale top-up, delivered late
    await checkout.allocate(product, units=2, generation=2)
    assert await units_left(checkout, product.product_id) == 2

    def returns(records: list[object]) -> list[StockAllocationReturned]:
        events = events_of(records, topics.CHECKOUT_ALLOCATIONS)  # type: ignore[arg-type]
        return [e for e in events if isinstance(e, StockAllocationReturned) and e.product_id == product.product_id]

    records = await read_topic(
        checkout.kafka,
        checkout.namespace + topics.CHECKOUT_ALLOCATIONS,
        until=lambda rs: len(returns(rs)) >= 2,
        timeout=30,
    )
    assert sorted((e.generation, e.units) for e in returns(records)) == [(1, 4), (1, 5)]


async def test_an_order_takes_another_unit_while_one_is_held(checkout: Checkout) -> None:
    # A transaction holding a unit of the allocation (an order between its statement and its commit) does not hold
    # up the next order: it takes another unit. With the allocation as one count per product, it waited for the
    # holder's commit (a drop's buyers queued on that row one behind the other).
    product = await checkout.list_product(stock=5)
    await checkout.allocate(product, units=2, generation=1)
    async with holding_a_unit(checkout, product):
        placed = await asyncio.wait_for(checkout.place(checkout.order_body(product.product_id)), timeout=30)
        assert placed.status_code == 202, placed.text
        events = await checkout.order_events(placed.json()["id"], until=lambda es: len(es) >= 1)
        (placed_event,) = [e for e in events if isinstance(e, OrderPlaced)]
        assert placed_event.allocation_generation == 1
        # The held unit is skipped, not taken: with one held and the other gone, the next order goes to catalog.
        beyond = await asyncio.wait_for(checkout.place(checkout.order_body(product.product_id)), timeout=30)
        assert beyond.status_code == 202, beyond.text
        events = await checkout.order_events(beyond.json()["id"], until=lambda es: len(es) >= 1)
        (beyond_event,) = [e for e in events if isinstance(e, OrderPlaced)]
        assert beyond_event.allocation_generation is None
    assert await units_left(checkout, product.product_id) == 1  # the held unit is there again


async def test_a_replaced_generation_gives_back_a_unit_an_order_held_and_did_not_take(checkout: Checkout) -> None:
    product = await checkout.list_product(stock=20)
    await checkout.allocate(product, units=3, generation=1)
    async with holding_a_unit(checkout, product):
        replaced = asyncio.create_task(checkout.allocate(product, units=1, generation=2))
        await asyncio.sleep(1)
        assert not replaced.done()  # the replacement waits for the holder: the held unit may yet be taken
    await replaced  # the holder rolled back without taking it
    assert await units_left(checkout, product.product_id) == 1
    records = await read_topic(
        checkout.kafka,
        checkout.namespace + topics.CHECKOUT_ALLOCATIONS,
        until=lambda rs: any(
            isinstance(e, StockAllocationReturned) and e.product_id == product.product_id
            for e in events_of(rs, topics.CHECKOUT_ALLOCATIONS)
        ),
        timeout=30,
    )
    returned = [
        (e.generation, e.units)
        for e in events_of(records, topics.CHECKOUT_ALLOCATIONS)
        if isinstance(e, StockAllocationReturned) and e.product_id == product.product_id
    ]
    assert returned == [(1, 3)]


@contextlib.asynccontextmanager
async def holding_a_unit(checkout: Checkout, product: ProductListed) -> AsyncIterator[None]:
    """A transaction holding one unit of the product's allocation (as an order does between its statement and its
    commit), rolled back at the end: the unit is not taken."""
    assert checkout.service.database_url is not None
    holder = await asyncpg.connect(checkout.service.database_url)
    try:
        tx = holder.transaction()
        await tx.start()
        held = await holder.fetch(
            "SELECT id FROM stock_allocation_units WHERE product_id = $1 LIMIT 1 FOR UPDATE", product.product_id
        )
        assert len(held) == 1
        try:
            yield
        finally:
            await tx.rollback()
    finally:
        await holder.close()


async def _applied_in_a_rolled_back_transaction(
    database_url: str, order_ids: list[uuid.UUID], stage: str, apply: Callable[[asyncpg.Connection], Awaitable[None]]
) -> tuple[Any, ...]:
    """What ``apply`` leaves (the orders, the heard counts, the outbox, the worker's wake-ups), read in its own
    transaction after ``stage`` (SQL on ``$1``, the orders), which is then rolled back: nothing stays behind."""
    conn = await asyncpg.connect(database_url)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(stage, order_ids)
            last_outbox = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
            async with outbox.batched(conn):  # as the reliable subscriber runs its handler
                await apply(conn)
            orders = await conn.fetch(
                """SELECT id, status, stock_reserved, reservation_heard, payment_due_at IS NOT NULL AS due,
                          cancel_reason, shipment_id, shipment_status
                   FROM orders WHERE id = ANY($1) ORDER BY id""",
                order_ids,
            )
            heard = await conn.fetch(
                """SELECT h.product_id, h.units FROM product_reservations_heard h
                   JOIN orders o ON o.product_id = h.product_id WHERE o.id = ANY($1) GROUP BY 1, 2 ORDER BY 1""",
                order_ids,
            )
            published = await conn.fetch(
                "SELECT event_type, message_key FROM outbox WHERE id > $1 ORDER BY id", last_outbox
            )
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    woken = [order_id for order_id in order_ids if reservations.made_due(order_id)]
    return [tuple(r) for r in orders], [tuple(r) for r in heard], [tuple(r) for r in published], woken


async def test_catalogs_answers_applied_together_leave_what_they_leave_one_by_one(checkout: Checkout) -> None:
    """The reservations consumer's batch form (a run of StockReserved in one statement) leaves checkout's database,
    outbox and worker wake-ups exactly as its handler applied to each event in turn, against checkout's own
    database: orders waiting for their stock, one reserved already, one that ended, one unknown, one answered twice,
    and a rejection between two runs. So does the shipments consumer's (the last word on an order is kept)."""
    product = await checkout.list_product(stock=20)
    placed = [await checkout.place(checkout.order_body(product.product_id)) for _ in range(5)]
    assert [p.status_code for p in placed] == [202] * 5, [p.text for p in placed]
    ids = [uuid.UUID(p.json()["id"]) for p in placed]
    waiting_a, waiting_b, reserved_already, ended, rejected = ids
    await checkout.reject({"id": str(ended)}, product, "sold out")

    async def cancelled() -> bool:
        rows = await checkout.sql("SELECT status FROM orders WHERE id = $1", ended)
        return rows[0]["status"] == "cancelled"

    await checkout.eventually(cancelled, what="the rejected order to be cancelled")

    def reserved(order_id: uuid.UUID) -> StockReserved:
        return StockReserved(
            producer="catalog", correlation_id="c", order_id=order_id, product_id=product.product_id, quantity=1
        )

    events: list[Envelope] = [
        reserved(waiting_a),
        reserved(reserved_already),
        reserved(ended),
        reserved(uuid.uuid4()),
        StockRejected(
            producer="catalog",
            correlation_id="c",
            order_id=rejected,
            product_id=product.product_id,
            quantity=1,
            reason="sold out",
        ),
        reserved(waiting_b),
        reserved(waiting_a),
        reserved(rejected),
    ]
    stage = "UPDATE orders SET stock_reserved = true WHERE id = ($1::uuid[])[3]"  # reserved_already
    assert checkout.service.database_url is not None
    url = checkout.service.database_url

    async def one_by_one(conn: asyncpg.Connection) -> None:
        for event in events:
            await handlers.on_reservation_event(conn, event)

    async def together(conn: asyncpg.Connection) -> None:
        await handlers.on_reservation_events(conn, events)

    alone = await _applied_in_a_rolled_back_transaction(url, ids, stage, one_by_one)
    at_once = await _applied_in_a_rolled_back_transaction(url, ids, stage, together)
    assert at_once == alone
    orders, heard, published, woken = alone
    status = {row[0]: row[1:4] for row in orders}
    assert status[waiting_a] == status[waiting_b] == ("pending", True, True)
    assert status[reserved_already] == ("pending", True, True)
    assert status[ended] == status[rejected] == ("cancelled", False, True)  # heard, whatever became of it
    assert heard == [(product.product_id, 5)]  # each known order once, the one answered twice too
    assert published == [("OrderCancelled", str(rejected))]
    assert woken == [waiting_a, waiting_b]

    shipment = uuid.uuid4()
    destination = Destination(city="Lyon", country="FR", lat=45.76, lon=4.84)
    shipment_events: list[Envelope] = [
        ShipmentCreated(
            producer="tracking",
            correlation_id="c",
            shipment_id=shipment,
            order_id=waiting_a,
            status="label_created",
            destination=destination,
        ),
        ShipmentStatusChanged(
            producer="tracking",
            correlation_id="c",
            shipment_id=shipment,
            order_id=waiting_a,
            from_status="label_created",
            to_status="picked_up",
        ),
        ShipmentCreated(
            producer="tracking",
            correlation_id="c",
            shipment_id=uuid.uuid4(),
            order_id=uuid.uuid4(),
            status="label_created",
            destination=destination,
        ),
    ]

    async def shipments_one_by_one(conn: asyncpg.Connection) -> None:
        for event in shipment_events:
            await handlers.on_shipment_event(conn, event)

    async def shipments_together(conn: asyncpg.Connection) -> None:
        await handlers.on_shipment_events(conn, shipment_events)

    nothing = "SELECT $1::uuid[]"
    alone = await _applied_in_a_rolled_back_transaction(url, ids, nothing, shipments_one_by_one)
    at_once = await _applied_in_a_rolled_back_transaction(url, ids, nothing, shipments_together)
    assert at_once == alone
    assert {row[0]: row[6:] for row in alone[0]}[waiting_a] == (shipment, "picked_up")


async def test_an_order_placed_against_a_generation_just_replaced_goes_to_catalog_as_placed(checkout: Checkout) -> None:
    """The POST's one statement (``repository.insert_order``) takes units only from the allocation's generation the
    purchase was checked against, with the OrderPlaced that says so; if that generation was replaced meanwhile, it
    takes none (the new generation's units stay) and the OrderPlaced asks catalog, as beyond the allocation. An
    Idempotency-Key taken already writes nothing: no order, no event, no unit taken."""
    from checkout import domain, repository
    from checkout.api import OrderIn
    from tweetshop_contracts import utc_now

    product = await checkout.list_product(stock=5)
    await checkout.allocate(product, units=2, generation=4)
    assert checkout.service.database_url is not None
    conn = await asyncpg.connect(checkout.service.database_url)

    def new_order() -> tuple[domain.Order, OrderPlaced]:
        request = OrderIn(**checkout.order_body(product.product_id)).to_request()
        price = domain.Price(product.merchant_id, product.price_minor, product.price_minor, product.currency)
        return domain.place(uuid.uuid4(), request, price, "c", utc_now())

    async def insert(generation: int, key: str) -> tuple[Any, list[Any], int]:
        order, placed = new_order()
        last = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
        inserted = await repository.insert_order(
            conn,
            order,
            key_hash=key,
            request_hash="r",
            token_hash=f"t-{key}",
            token_sealed="s",
            placed=placed,
            allocation_generation=generation,
            placed_from_allocation=domain.reserved_from_allocation(order, placed, generation)[1],
        )
        published = [
            OrderPlaced.model_validate_json(r["payload"])
            for r in await conn.fetch("SELECT payload FROM outbox WHERE id > $1 ORDER BY id", last)
        ]
        assert [p.order_id for p in published] == [order.id]
        return inserted, published, await units_left_in(conn)

    async def units_left_in(conn: asyncpg.Connection) -> int:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM stock_allocation_units WHERE product_id = $1", product.product_id
        )
        return count

    try:
        tx = conn.transaction()
        await tx.start()
        try:
            stale, stale_events, units = await insert(3, "key-stale")
            assert stale.allocation_generation is None and units == 2
            assert stale_events[0].allocation_generation is None
            current, current_events, units = await insert(4, "key-current")
            assert current.allocation_generation == 4 and units == 1
            assert current_events[0].allocation_generation == 4
            outbox_rows = await conn.fetchval("SELECT count(*) FROM outbox")
            with pytest.raises(repository.KeyTaken):
                async with conn.transaction():  # a savepoint: the failed statement leaves the test's transaction
                    await insert(4, "key-current")
            assert await units_left_in(conn) == 1
            assert await conn.fetchval("SELECT count(*) FROM outbox") == outbox_rows
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def test_an_order_placed_leased_is_inserted_as_a_claim_leaves_it(checkout: Checkout) -> None:
    """With ``lease_s`` (its process's payment worker has room), the POST's one statement inserts an order from the
    allocation as ``claim_due_payments`` would leave it: leased (no claim takes it), its first creation attempt
    counted before Stripe is called, and returned with the version the one-statement apply checks, so Stripe's
    answer is applied to it as inserted. An order beyond the allocation is not leased (it waits for catalog), and
    without ``lease_s`` an order from the allocation is due at once, for a claim, as before."""
    from checkout import domain, repository
    from checkout.api import OrderIn
    from checkout.config import CheckoutSettings
    from checkout.domain import IntentFacts, PaymentOutcome
    from checkout.usecases.payments import PaymentStep, apply_as_claimed
    from tweetshop_contracts import utc_now

    product = await checkout.list_product(stock=5)
    await checkout.allocate(product, units=2, generation=2)
    assert checkout.service.database_url is not None
    conn = await asyncpg.connect(checkout.service.database_url)

    async def insert(generation: int, key: str, lease_s: float | None) -> tuple[domain.Order, Any]:
        request = OrderIn(**checkout.order_body(product.product_id)).to_request()
        price = domain.Price(product.merchant_id, product.price_minor, product.price_minor, product.currency)
        order, placed = domain.place(uuid.uuid4(), request, price, "c", utc_now())
        inserted = await repository.insert_order(
            conn,
            order,
            key_hash=key,
            request_hash="r",
            token_hash=hashlib.sha256(key.encode()).hexdigest(),
            token_sealed="s",
            placed=placed,
            allocation_generation=generation,
            placed_from_allocation=domain.reserved_from_allocation(order, placed, generation)[1],
            lease_s=lease_s,
        )
        return order, inserted

    async def schedule(order: domain.Order) -> tuple[int, float | None]:
        row = await conn.fetchrow(
            "SELECT payment_attempts, extract(epoch FROM payment_due_at - now())::float8 AS due_in FROM orders "
            "WHERE id = $1",
            order.id,
        )
        assert row is not None
        return row["payment_attempts"], row["due_in"]

    try:
        tx = conn.transaction()
        await tx.start()
        try:
            leased, inserted = await insert(2, "key-leased", 30.0)
            claimed = inserted.claimed
            assert claimed is not None and claimed.order.id == leased.id
            assert claimed.order.stock_reserved and claimed.order.payment_attempts == 1 and not claimed.overdue
            assert claimed.access_hash == hashlib.sha256(b"key-leased").hexdigest()
            attempts, due_in = await schedule(leased)
            assert attempts == 1 and due_in is not None and 25 < due_in <= 30
            async with conn.transaction():
                assert await repository.claim_due_payments(conn, 100, 30, 900, 900) == []

            due, not_leased = await insert(2, "key-due", None)
            assert not_leased.claimed is None and not_leased.allocation_generation == 2
            attempts, due_in = await schedule(due)
            assert attempts == 0 and due_in is not None and due_in <= 0

            beyond, stale = await insert(1, "key-beyond", 30.0)
            assert stale.claimed is None and stale.allocation_generation is None
            assert await schedule(beyond) == (0, None)

            facts = IntentFacts(str(leased.id), leased.amount_minor, leased.currency, False)
            paid = PaymentOutcome("paid", "pi_leased", facts=facts)
            step = PaymentStep(claimed.order, claimed.overdue, claimed.version, claimed.access_hash)
            change = await apply_as_claimed(conn, step, paid, CheckoutSettings())
            assert change is not None and (change.before, change.after) == ("pending", "paid")
        finally:
            await tx.rollback()
    finally:
        await conn.close()
