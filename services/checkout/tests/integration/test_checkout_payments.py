"""checkout against the real broker, Postgres and localstripe: the test plays catalog, feed, tracking and the buyer.

One checkout process serves the whole module (starting one takes seconds); every
test uses its own products and orders, so tests cannot see each other's effects.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from tweetshop_contracts import (
    Destination,
    Envelope,
    OrderCancelled,
    OrderPaid,
    OrderPaymentFailed,
    OrderPlaced,
    OrderRefunded,
    ProductListed,
    ProductUpdated,
    ShipmentCreated,
    StockRejected,
    StockReserved,
    topics,
)
from tweetshop_devstack.kafka_probe import events_of, publish_events, read_topic
from tweetshop_devstack.pytest_plugin import (
    KafkaServer,
    RunningService,
    ScratchDatabase,
    ServiceProcesses,
    dsn_with_database,
    run_sync,
)
from tweetshop_devstack.services import DEV_STRIPE_API_KEY, DEV_STRIPE_WEBHOOK_SECRET

T = TypeVar("T")
CHARGED = "pm_card_visa"
# localstripe declines this one when charging; its pm_card_visa_chargeDeclined only fails when attached to a customer.
DECLINED = "pm_card_chargeCustomerFail"
THREE_D_SECURE_CARD = "4000002760003184"


@dataclass
class Checkout:
    service: RunningService
    namespace: str
    kafka: str
    stripe: str

    @property
    def url(self) -> str:
        return self.service.base_url


async def _create_database(admin_dsn: str, name: str, *, drop: bool = False) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        if drop:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def checkout(
    request: pytest.FixtureRequest,
    postgres_admin_dsn: str,
    kafka_server: KafkaServer,
    stripe_base_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Checkout]:
    """One checkout process, its own database and topic namespace, for every test of this module."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = dsn_with_database(postgres_admin_dsn, "postgres")
    run_sync(_create_database(admin, name))
    processes = ServiceProcesses(
        request,
        ScratchDatabase(name, dsn_with_database(postgres_admin_dsn, name)),
        kafka_server,
        tmp_path_factory.mktemp("checkout"),
    )
    try:
        # Undecided payments are checked with Stripe every second (30 s by default): failed 3-D Secure sends no webhook.
        env = {"TWEETSHOP_PAYMENT_POLL_INTERVAL_S": "0.2", "TWEETSHOP_PAYMENT_RECHECK_INTERVAL_S": "1"}
        service = processes.start("checkout", env=env)
        yield Checkout(service, processes.topic_namespace, kafka_server.bootstrap_servers, stripe_base_url)
    finally:
        processes.stop_all()
        run_sync(_create_database(admin, name, drop=True))


# --- helpers: the other services and the buyer -------------------------------------------


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 20, what: str = "") -> T:
    """The first non-None answer of ``check``, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.1)


async def list_product(c: Checkout, *, price_minor: int = 1200, stock: int = 5, version: int = 1) -> ProductListed:
    """Play catalog: a product appears on catalog.products.v1."""
    product = ProductListed(
        producer="catalog",
        correlation_id=f"corr-{uuid.uuid4()}",
        product_id=uuid.uuid4(),
        merchant_id=uuid.uuid4(),
        title="Mug",
        price_minor=price_minor,
        currency="EUR",
        stock_available=stock,
        version=version,
    )
    await publish_events(c.kafka, c.namespace, product)
    return product


def order_body(product_id: uuid.UUID, *, quantity: int = 1, payment_method: str = CHARGED) -> dict[str, Any]:
    return {
        "tweet_id": str(uuid.uuid4()),
        "product_id": str(product_id),
        "quantity": quantity,
        "buyer": {"id": "buyer-1", "email": "ada@example.com"},
        "shipping": {
            "name": "Ada",
            "line1": "1 rue de Rivoli",
            "city": "Paris",
            "country": "FR",
            "lat": 48.86,
            "lon": 2.35,
        },
        "payment_method": payment_method,
    }


async def place(
    c: Checkout, body: dict[str, Any], key: str | None = None, correlation_id: str | None = None
) -> httpx.Response:
    """POST /orders, waiting while checkout has not read the product yet."""
    headers = {"Idempotency-Key": key or str(uuid.uuid4()), "x-correlation-id": correlation_id or str(uuid.uuid4())}

    async def attempt() -> httpx.Response | None:
        async with httpx.AsyncClient(base_url=c.url, timeout=10) as http:
            response = await http.post("/orders", json=body, headers=headers)
        known = not (response.status_code == 404 and response.json()["error"] == "unknown_product")
        return response if known else None

    return await eventually(attempt, what="checkout to know the product")


async def get_order(c: Checkout, order_id: str, token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=c.url, timeout=10) as http:
        response = await http.get(f"/orders/{order_id}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def until_status(c: Checkout, order: dict[str, Any], *statuses: str, timeout: float = 20) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        current = await get_order(c, order["id"], order["access_token"])
        return current if current["status"] in statuses else None

    return await eventually(check, timeout=timeout, what=f"order {order['id']} to become {statuses}")


async def reserve(c: Checkout, order: dict[str, Any], product: ProductListed, quantity: int = 1) -> StockReserved:
    """Play catalog: stock set aside for the order."""
    reserved = StockReserved(
        producer="catalog",
        correlation_id="catalog-corr",
        order_id=uuid.UUID(order["id"]),
        product_id=product.product_id,
        quantity=quantity,
    )
    await publish_events(c.kafka, c.namespace, reserved)
    return reserved


async def order_events(c: Checkout, order_id: str, until: Callable[[list[Envelope]], bool]) -> list[Envelope]:
    """checkout.orders.v1 events of one order, read from the start until ``until`` holds."""

    def mine(records: list[Any]) -> list[Envelope]:
        return [e for e in events_of(records, topics.CHECKOUT_ORDERS) if str(getattr(e, "order_id", "")) == order_id]

    records = await read_topic(c.kafka, c.namespace + topics.CHECKOUT_ORDERS, until=lambda rs: until(mine(rs)))
    return mine(records)


async def stripe_intents_for(c: Checkout, order_id: str) -> list[dict[str, Any]]:
    """Every PaymentIntent Stripe holds for the order (localstripe has no search: page through all)."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    async with httpx.AsyncClient(base_url=c.stripe, auth=(DEV_STRIPE_API_KEY, ""), timeout=10) as http:
        while True:
            page = (await http.get("/v1/payment_intents", params=params)).json()
            found += [pi for pi in page["data"] if (pi.get("metadata") or {}).get("order_id") == order_id]
            if not page["has_more"]:
                return found
            params["starting_after"] = page["data"][-1]["id"]


# --- the tests ---------------------------------------------------------------------------


async def test_an_order_paid_with_a_visa_card_becomes_paid_and_order_paid_is_published(checkout: Checkout) -> None:
    product = await list_product(checkout, price_minor=1250)
    placed = await place(checkout, order_body(product.product_id, quantity=2), correlation_id="corr-buy-1")
    assert placed.status_code == 202, placed.text
    order = placed.json()
    assert (order["status"], order["amount_minor"], order["currency"]) == ("pending", 2500, "EUR")
    assert order["access_token"].startswith("tso_")

    await reserve(checkout, order, product, quantity=2)
    paid = await until_status(checkout, order, "paid")
    assert paid["payment_intent_id"].startswith("pi_")
    assert paid["client_secret"] is None and paid["failure_reason"] is None

    events = await order_events(checkout, order["id"], lambda es: any(isinstance(e, OrderPaid) for e in es))
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
    intents = await stripe_intents_for(checkout, order["id"])
    assert [(pi["amount"], pi["currency"], pi["status"]) for pi in intents] == [(2500, "eur", "succeeded")]


async def test_a_declined_card_fails_the_order_with_stripes_reason_and_publishes_order_payment_failed(
    checkout: Checkout,
) -> None:
    product = await list_product(checkout)
    order = (await place(checkout, order_body(product.product_id, payment_method=DECLINED))).json()
    await reserve(checkout, order, product)

    failed = await until_status(checkout, order, "failed")
    assert failed["failure_reason"] == "Your card was declined."
    events = await order_events(checkout, order["id"], lambda es: any(isinstance(e, OrderPaymentFailed) for e in es))
    failure = next(e for e in events if isinstance(e, OrderPaymentFailed))
    assert failure.stock_reserved is True and failure.reason == "Your card was declined."
    assert not any(isinstance(e, OrderPaid) for e in events)


async def test_the_same_idempotency_key_twice_gives_one_order_and_with_another_body_409(checkout: Checkout) -> None:
    product = await list_product(checkout)
    body = order_body(product.product_id)
    key = str(uuid.uuid4())
    first = await place(checkout, body, key)
    again = await place(checkout, body, key)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json() == first.json(), "the replay carries the same id and access token"

    reused = await place(checkout, {**body, "quantity": 2}, key)
    assert reused.status_code == 409
    assert reused.json()["error"] == "idempotency_key_reused"
    events = await order_events(checkout, first.json()["id"], lambda es: len(es) >= 1)
    assert [type(e) for e in events] == [OrderPlaced]


async def test_concurrent_identical_requests_make_one_order(checkout: Checkout) -> None:
    product = await list_product(checkout)
    body = order_body(product.product_id)
    await place(checkout, body)  # the product is known from here on
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
            "/orders", json=order_body(uuid.uuid4()), headers={"Idempotency-Key": str(uuid.uuid4())}
        )
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_product"

    product = await list_product(checkout, stock=2)
    key = str(uuid.uuid4())
    too_many = await place(checkout, order_body(product.product_id, quantity=3), key)
    assert too_many.status_code == 409
    assert too_many.json()["error"] == "insufficient_stock" and "only 2 left" in too_many.json()["message"]
    # Nothing was written: the same key still works for an order that fits.
    fits = await place(checkout, order_body(product.product_id, quantity=2), key)
    assert fits.status_code == 202


async def test_a_newer_product_version_wins_and_a_stale_one_is_dropped(checkout: Checkout) -> None:
    listed = await list_product(checkout, price_minor=1000, version=1)
    newer = ProductUpdated(
        **{**listed.model_dump(exclude={"event_id", "event_type"}), "price_minor": 1500, "version": 3}
    )
    stale = ProductUpdated(
        **{**listed.model_dump(exclude={"event_id", "event_type"}), "price_minor": 999, "version": 2}
    )
    await publish_events(checkout.kafka, checkout.namespace, newer, stale)

    async def priced_at_1500() -> httpx.Response | None:
        response = await place(checkout, order_body(listed.product_id))
        return response if response.json()["amount_minor"] == 1500 else None

    await eventually(priced_at_1500, what="the new price")
    await asyncio.sleep(0.5)  # the stale version, published after, has been read by now
    assert (await place(checkout, order_body(listed.product_id))).json()["amount_minor"] == 1500


async def test_the_same_stock_reserved_delivered_twice_creates_one_payment_intent(checkout: Checkout) -> None:
    product = await list_product(checkout)
    order = (await place(checkout, order_body(product.product_id))).json()
    reserved = await reserve(checkout, order, product)
    # The same message again (a redelivery) and another reservation event for the same order.
    await publish_events(
        checkout.kafka, checkout.namespace, reserved, reserved.model_copy(update={"event_id": uuid.uuid4()})
    )
    await until_status(checkout, order, "paid")
    await asyncio.sleep(1.5)  # time for a wrongly triggered second charge to reach Stripe
    intents = await stripe_intents_for(checkout, order["id"])
    assert len(intents) == 1
    events = await order_events(checkout, order["id"], lambda es: any(isinstance(e, OrderPaid) for e in es))
    assert [type(e) for e in events].count(OrderPaid) == 1


async def test_a_rejected_reservation_cancels_the_order_without_charging(checkout: Checkout) -> None:
    product = await list_product(checkout)
    order = (await place(checkout, order_body(product.product_id))).json()
    rejected = StockRejected(
        producer="catalog",
        correlation_id="x",
        order_id=uuid.UUID(order["id"]),
        product_id=product.product_id,
        quantity=1,
        reason="only 0 left in stock, 1 asked",
    )
    await publish_events(checkout.kafka, checkout.namespace, rejected)

    cancelled = await until_status(checkout, order, "cancelled")
    assert cancelled["cancellation_reason"] == "only 0 left in stock, 1 asked"
    events = await order_events(checkout, order["id"], lambda es: any(isinstance(e, OrderCancelled) for e in es))
    cancel = next(e for e in events if isinstance(e, OrderCancelled))
    assert cancel.stock_reserved is False
    assert await stripe_intents_for(checkout, order["id"]) == []


async def order_waiting_for_3ds(c: Checkout) -> tuple[dict[str, Any], dict[str, Any]]:
    """An order paid with a 3-D Secure card, reserved and now waiting for the buyer: (order, its current view)."""
    async with httpx.AsyncClient(base_url=c.stripe, auth=(DEV_STRIPE_API_KEY, ""), timeout=10) as stripe:
        # What Stripe.js does in the browser: the card number goes to Stripe, only the pm_ id to us.
        card = {"card[number]": THREE_D_SECURE_CARD, "card[exp_month]": "12", "card[exp_year]": "2030"}
        method = (await stripe.post("/v1/payment_methods", data={"type": "card", **card, "card[cvc]": "123"})).json()
    product = await list_product(c)
    order = (await place(c, order_body(product.product_id, payment_method=method["id"]))).json()
    await reserve(c, order, product)
    return order, await until_status(c, order, "requires_action")


async def authenticate(c: Checkout, waiting: dict[str, Any], *, success: bool) -> None:
    """What the buyer does in Stripe.js's 3-D Secure dialog."""
    async with httpx.AsyncClient(base_url=c.stripe, auth=(DEV_STRIPE_API_KEY, ""), timeout=10) as stripe:
        response = await stripe.post(
            f"/v1/payment_intents/{waiting['payment_intent_id']}/_authenticate",
            data={"client_secret": waiting["client_secret"], "success": "true" if success else "false"},
        )
    assert response.status_code == 200, response.text


def signed(payload: bytes, secret: str = DEV_STRIPE_WEBHOOK_SECRET) -> dict[str, str]:
    """Stripe's signature header for ``payload``."""
    timestamp = int(time.time())
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={timestamp},v1={signature}", "Content-Type": "application/json"}


async def test_a_3ds_card_waits_for_the_buyer_then_the_order_is_paid(checkout: Checkout) -> None:
    order, waiting = await order_waiting_for_3ds(checkout)
    assert waiting["client_secret"].startswith(waiting["payment_intent_id"])
    assert waiting["failure_reason"] is None

    await authenticate(checkout, waiting, success=True)
    paid = await until_status(checkout, order, "paid", timeout=15)
    assert paid["client_secret"] is None
    events = await order_events(checkout, order["id"], lambda es: any(isinstance(e, OrderPaid) for e in es))
    assert [type(e) for e in events] == [OrderPlaced, OrderPaid]


async def test_a_failed_3ds_authentication_fails_the_order(checkout: Checkout) -> None:
    order, waiting = await order_waiting_for_3ds(checkout)
    await authenticate(checkout, waiting, success=False)
    failed = await until_status(checkout, order, "failed", timeout=15)
    assert "authentication" in failed["failure_reason"]
    events = await order_events(checkout, order["id"], lambda es: any(isinstance(e, OrderPaymentFailed) for e in es))
    assert [type(e) for e in events] == [OrderPlaced, OrderPaymentFailed]


async def test_a_signed_stripe_event_is_applied_once_however_often_it_is_delivered(checkout: Checkout) -> None:
    order, waiting = await order_waiting_for_3ds(checkout)
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
        first = await http.post("/webhooks/stripe", content=payload, headers=signed(payload))
        second = await http.post("/webhooks/stripe", content=payload, headers=signed(payload))
    assert (first.status_code, first.json()["outcome"]) == (200, "applied")
    assert (second.status_code, second.json()["outcome"]) == (200, "duplicate")
    assert (await get_order(checkout, order["id"], order["access_token"]))["status"] == "paid"
    await asyncio.sleep(1.5)  # a wrongly applied second delivery or a worker re-check would have published by now
    events = await order_events(checkout, order["id"], lambda es: any(isinstance(e, OrderPaid) for e in es))
    assert [type(e) for e in events] == [OrderPlaced, OrderPaid]


async def test_a_webhook_with_a_bad_signature_is_refused_and_changes_nothing(checkout: Checkout) -> None:
    product = await list_product(checkout)
    order = (await place(checkout, order_body(product.product_id))).json()
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
    assert (await get_order(checkout, order["id"], order["access_token"]))["status"] == "pending"


async def test_reading_an_order_needs_its_own_token(checkout: Checkout) -> None:
    product = await list_product(checkout)
    mine = (await place(checkout, order_body(product.product_id))).json()
    theirs = (await place(checkout, order_body(product.product_id))).json()
    async with httpx.AsyncClient(base_url=checkout.url, timeout=10) as http:
        anonymous = await http.get(f"/orders/{mine['id']}")
        wrong = await http.get(f"/orders/{mine['id']}", headers={"Authorization": f"Bearer {theirs['access_token']}"})
    assert anonymous.status_code == 401
    assert wrong.status_code == 404


async def test_a_shipment_gives_the_buyer_a_tracking_url_with_their_token(checkout: Checkout) -> None:
    product = await list_product(checkout)
    order = (await place(checkout, order_body(product.product_id))).json()
    await reserve(checkout, order, product)
    await until_status(checkout, order, "paid")
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
        current = await get_order(checkout, order["id"], order["access_token"])
        return current if current["tracking_url"] else None

    current = await eventually(shipped, what="the shipment")
    assert current["shipment_id"] == str(shipment.shipment_id)
    assert current["tracking_url"].endswith(f"/track/{order['id']}?token={order['access_token']}")


async def test_a_paid_order_is_refunded_in_part_then_in_full(checkout: Checkout) -> None:
    product = await list_product(checkout, price_minor=1000)
    order = (await place(checkout, order_body(product.product_id, quantity=2))).json()
    auth = {"Authorization": f"Bearer {order['access_token']}"}
    async with httpx.AsyncClient(base_url=checkout.url, timeout=10) as http:
        unpaid = await http.post(f"/orders/{order['id']}/refund", headers=auth)
        assert unpaid.status_code == 409 and unpaid.json()["error"] == "order_not_paid"
        await reserve(checkout, order, product, quantity=2)
        await until_status(checkout, order, "paid")

        part = await http.post(f"/orders/{order['id']}/refund", json={"amount_minor": 500}, headers=auth)
        assert part.status_code == 200, part.text
        assert (part.json()["status"], part.json()["refunded_minor"]) == ("paid", 500)
        too_much = await http.post(f"/orders/{order['id']}/refund", json={"amount_minor": 1501}, headers=auth)
        assert too_much.status_code == 409 and too_much.json()["error"] == "refund_exceeds_remaining"
        rest = await http.post(f"/orders/{order['id']}/refund", headers=auth)
        assert (rest.json()["status"], rest.json()["refunded_minor"]) == ("refunded", 2000)

    events = await order_events(checkout, order["id"], lambda es: sum(isinstance(e, OrderRefunded) for e in es) >= 2)
    refunds = [e for e in events if isinstance(e, OrderRefunded)]
    assert [(r.amount_minor, r.refunded_total_minor, r.full, r.restock) for r in refunds] == [
        (500, 500, False, False),
        (1500, 2000, True, True),
    ]


async def test_an_intent_made_by_an_attempt_whose_answer_was_lost_is_adopted_not_charged_again(
    checkout: Checkout,
) -> None:
    product = await list_product(checkout, price_minor=700)
    order = (await place(checkout, order_body(product.product_id))).json()
    # The state a crash leaves behind: the attempt was committed, Stripe made the intent, its id never got saved.
    async with httpx.AsyncClient(base_url=checkout.stripe, auth=(DEV_STRIPE_API_KEY, ""), timeout=10) as stripe:
        made = await stripe.post(
            "/v1/payment_intents",
            data={
                "amount": "700",
                "currency": "eur",
                "payment_method": CHARGED,
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

    await reserve(checkout, order, product)
    paid = await until_status(checkout, order, "paid")
    assert paid["payment_intent_id"] == made.json()["id"]
    assert len(await stripe_intents_for(checkout, order["id"])) == 1
