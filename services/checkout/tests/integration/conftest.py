"""checkout against the real broker, Postgres and localstripe: one checkout process per test module.

The ``checkout`` fixture starts it (with the module's ``CHECKOUT_ENV`` added to its
environment) and hands the tests a driver that plays catalog, feed, tracking and
the buyer. Every test uses its own products and orders, so tests cannot see each
other's effects.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from tweetshop_contracts import (
    Envelope,
    MerchantApiKeyRotated,
    MerchantRegistered,
    ProductListed,
    ProductUpdated,
    StockAllocated,
    StockRejected,
    StockReserved,
    topics,
)
from tweetshop_devstack.kafka_probe import events_of, publish_events, read_topic
from tweetshop_devstack.pytest_plugin import KafkaServer, RunningService, scratch_processes
from tweetshop_devstack.seed import order_body as seed_order_body
from tweetshop_devstack.services import DEV_STRIPE_API_KEY, DEV_STRIPE_WEBHOOK_SECRET
from tweetshop_devstack.testing import eventually_async as eventually
from tweetshop_devstack.testing import fetch

CHARGED = "pm_card_visa"
DECLINED = "pm_card_visa_chargeDeclined"
THREE_D_SECURE_CARD = "4000002760003184"
# Undecided payments are checked with Stripe every second (30 s by default): failed 3-D Secure sends no webhook.
BASE_ENV = {"TWEETSHOP_PAYMENT_POLL_INTERVAL_S": "0.2", "TWEETSHOP_PAYMENT_RECHECK_INTERVAL_S": "1"}


def signed(payload: bytes, secret: str = DEV_STRIPE_WEBHOOK_SECRET, *, at: float | None = None) -> dict[str, str]:
    """Stripe's signature header for ``payload`` (signed now, or at Unix time ``at``)."""
    timestamp = int(time.time() if at is None else at)
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={timestamp},v1={signature}", "Content-Type": "application/json"}


class Checkout:
    """The checkout process under test, and the other parties it talks to, played by the test."""

    CHARGED = CHARGED
    DECLINED = DECLINED
    eventually = staticmethod(eventually)
    signed = staticmethod(signed)

    def __init__(self, service: RunningService, namespace: str, kafka: str, stripe: str) -> None:
        self.service = service
        self.namespace = namespace
        self.kafka = kafka
        self.stripe = stripe

    @property
    def url(self) -> str:
        return self.service.base_url

    def http(self) -> httpx.AsyncClient:
        """A client for checkout's API."""
        return httpx.AsyncClient(base_url=self.url, timeout=10)

    def stripe_http(self) -> httpx.AsyncClient:
        """A client for the Stripe server (what Stripe.js and the dashboard do)."""
        return httpx.AsyncClient(base_url=self.stripe, auth=(DEV_STRIPE_API_KEY, ""), timeout=10)

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run SQL as checkout's own role (to look at, or to stage, what a crash leaves behind)."""
        assert self.service.database_url is not None
        return await fetch(self.service.database_url, query, *args)

    async def keep_worker_away(self, order_id: str) -> None:
        """Push the order's next payment step an hour away: only what the test does may move it meanwhile."""
        await self.sql(
            "UPDATE orders SET payment_due_at = now() + interval '1 hour' WHERE id = $1", uuid.UUID(order_id)
        )

    # --- catalog --------------------------------------------------------------------------

    async def list_product(
        self, *, price_minor: int = 1200, stock: int = 5, version: int = 1, units_reserved_total: int | None = None
    ) -> ProductListed:
        """A product appears on catalog.products.v1 (``units_reserved_total``: as catalog 1.3.0 sends it)."""
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
            units_reserved_total=units_reserved_total,
        )
        await publish_events(self.kafka, self.namespace, product)
        return product

    async def merchant_key(self, merchant_id: uuid.UUID, *, rotate: bool = False) -> str:
        """The merchant's API key as catalog issued it: only its hash reaches checkout, on catalog.merchants.v1."""
        key = f"tsk_{uuid.uuid4().hex}"
        digest = hashlib.sha256(key.encode()).hexdigest()
        event: Envelope = (
            MerchantApiKeyRotated(
                producer="catalog", correlation_id="rotate", merchant_id=merchant_id, api_key_sha256=digest
            )
            if rotate
            else MerchantRegistered(
                producer="catalog",
                correlation_id="onboard",
                merchant_id=merchant_id,
                handle="shop",
                name="Shop",
                api_key_sha256=digest,
            )
        )
        await publish_events(self.kafka, self.namespace, event)
        return key

    async def update_product(self, product: ProductListed, **changes: Any) -> ProductUpdated:
        """catalog's ProductUpdated: the listed product with ``changes`` (a new ``version`` among them)."""
        updated = ProductUpdated(**{**product.model_dump(exclude={"event_id", "event_type"}), **changes})
        await publish_events(self.kafka, self.namespace, updated)
        return updated

    async def until_accepted(self, product: ProductListed, what: str) -> httpx.Response:
        """Order the product until checkout accepts an order (202)."""

        async def accepted() -> httpx.Response | None:
            answer = await self.place(self.order_body(product.product_id))
            return answer if answer.status_code == 202 else None

        return await eventually(accepted, what=what)

    async def reserve(self, order: dict[str, Any], product: ProductListed, quantity: int = 1) -> StockReserved:
        """Stock set aside for the order."""
        reserved = StockReserved(
            producer="catalog",
            correlation_id="catalog-corr",
            order_id=uuid.UUID(order["id"]),
            product_id=product.product_id,
            quantity=quantity,
        )
        await publish_events(self.kafka, self.namespace, reserved)
        return reserved

    async def allocate(self, product: ProductListed, units: int, generation: int = 0) -> StockAllocated:
        """Units of the product set aside for checkout (catalog.allocations.v1), applied before this returns."""
        allocated = StockAllocated(
            producer="catalog",
            correlation_id="alloc",
            product_id=product.product_id,
            generation=generation,
            units=units,
        )
        await publish_events(self.kafka, self.namespace, allocated)

        async def applied() -> bool:
            rows = await self.sql("SELECT 1 FROM inbox WHERE event_id = $1", allocated.event_id)
            return bool(rows)

        await eventually(applied, what="checkout to apply the allocation")
        return allocated

    async def reject(self, order: dict[str, Any], product: ProductListed, reason: str) -> StockRejected:
        """No stock for the order."""
        rejected = StockRejected(
            producer="catalog",
            correlation_id="x",
            order_id=uuid.UUID(order["id"]),
            product_id=product.product_id,
            quantity=1,
            reason=reason,
        )
        await publish_events(self.kafka, self.namespace, rejected)
        return rejected

    # --- the buyer ------------------------------------------------------------------------

    @staticmethod
    def order_body(product_id: uuid.UUID, *, quantity: int = 1, payment_method: str = CHARGED) -> dict[str, Any]:
        return seed_order_body(uuid.uuid4(), product_id, quantity=quantity, payment_method=payment_method)

    async def place(
        self, body: dict[str, Any], key: str | None = None, correlation_id: str | None = None
    ) -> httpx.Response:
        """POST /orders, waiting while checkout has not read the product yet.

        It first waits, in checkout's database, for the product's row (its read model learns a product up to a
        read model's fetch wait late, 500 ms, or a quiet consumer's, 1 s): a POST per try would count against
        the orders' rate limit, which some modules set low."""
        headers = {
            "Idempotency-Key": key or str(uuid.uuid4()),
            "x-correlation-id": correlation_id or str(uuid.uuid4()),
        }
        try:
            product_id = uuid.UUID(str(body.get("product_id")))
        except ValueError:
            product_id = None
        if product_id is not None:

            async def known() -> bool:
                return bool(await self.sql("SELECT 1 FROM products WHERE id = $1", product_id))

            await eventually(known, what="checkout to know the product")

        async def attempt() -> httpx.Response | None:
            async with self.http() as http:
                response = await http.post("/orders", json=body, headers=headers)
            known = not (response.status_code == 404 and response.json()["error"] == "unknown_product")
            return response if known else None

        return await eventually(attempt, what="checkout to know the product")

    async def get_order(self, order_id: str, token: str) -> dict[str, Any]:
        async with self.http() as http:
            response = await http.get(f"/orders/{order_id}", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def until_status(self, order: dict[str, Any], *statuses: str, timeout: float = 20) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            current = await self.get_order(order["id"], order["access_token"])
            return current if current["status"] in statuses else None

        return await eventually(check, timeout=timeout, what=f"order {order['id']} to become {statuses}")

    async def new_3ds_payment_method(self) -> str:
        """What Stripe.js does in the browser: the card number goes to Stripe, only the pm_ id to us."""
        card = {"card[number]": THREE_D_SECURE_CARD, "card[exp_month]": "12", "card[exp_year]": "2030"}
        async with self.stripe_http() as stripe:
            method = await stripe.post("/v1/payment_methods", data={"type": "card", **card, "card[cvc]": "123"})
        return str(method.json()["id"])

    async def order_waiting_for_3ds(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """An order paid with a 3-D Secure card, reserved and now waiting for the buyer: (order, its current view)."""
        method = await self.new_3ds_payment_method()
        product = await self.list_product()
        order = (await self.place(self.order_body(product.product_id, payment_method=method))).json()
        await self.reserve(order, product)
        return order, await self.until_status(order, "requires_action")

    async def authenticate(self, waiting: dict[str, Any], *, success: bool) -> None:
        """What the buyer does in Stripe.js's 3-D Secure dialog."""
        async with self.stripe_http() as stripe:
            response = await stripe.post(
                f"/v1/payment_intents/{waiting['payment_intent_id']}/_authenticate",
                data={"client_secret": waiting["client_secret"], "success": "true" if success else "false"},
            )
        assert response.status_code == 200, response.text

    # --- what came out --------------------------------------------------------------------

    async def order_events(self, order_id: str, until: Callable[[list[Envelope]], bool]) -> list[Envelope]:
        """checkout.orders.v1 events of one order, read from the start until ``until`` holds."""

        def mine(records: list[Any]) -> list[Envelope]:
            events = events_of(records, topics.CHECKOUT_ORDERS)
            return [e for e in events if str(getattr(e, "order_id", "")) == order_id]

        records = await read_topic(
            self.kafka, self.namespace + topics.CHECKOUT_ORDERS, until=lambda rs: until(mine(rs))
        )
        return mine(records)

    async def stripe_intents_for(self, order_id: str) -> list[dict[str, Any]]:
        """Every PaymentIntent Stripe holds for the order (localstripe has no search: page through all)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        async with self.stripe_http() as http:
            while True:
                page = (await http.get("/v1/payment_intents", params=params)).json()
                found += [pi for pi in page["data"] if (pi.get("metadata") or {}).get("order_id") == order_id]
                if not page["has_more"]:
                    return found
                params["starting_after"] = page["data"][-1]["id"]


@pytest.fixture(scope="module")
def checkout(
    request: pytest.FixtureRequest,
    postgres_admin_dsn: str,
    kafka_server: KafkaServer,
    stripe_base_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Checkout]:
    """One checkout process, its own database and topic namespace, for every test of the module."""
    log_dir = tmp_path_factory.mktemp("checkout")
    with scratch_processes(request, postgres_admin_dsn, kafka_server, log_dir) as processes:
        env = {**BASE_ENV, **getattr(request.module, "CHECKOUT_ENV", {})}
        service = processes.start("checkout", env=env)
        yield Checkout(service, processes.topic_namespace, kafka_server.bootstrap_servers, stripe_base_url)
