"""One purchase is one trace: the web app, catalog, feed, checkout and tracking, every HTTP call and Kafka hop.

The five apps run in this process (so one in-memory exporter sees every span), each with its own tracer
provider (``service.name``), database role and schema, on the real broker, Postgres and localstripe of the
devstack fixtures. The buyer's calls go through the web app's gateway, whose httpx clients reach the services'
ASGI apps: the trace context travels in real ``traceparent`` headers, and in Kafka headers between services.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from catalog.config import CatalogSettings
from catalog.main import create_app as create_catalog
from checkout.config import CheckoutSettings
from checkout.main import create_app as create_checkout
from fastapi import FastAPI
from feed.config import FeedSettings
from feed.main import create_app as create_feed
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic_settings import BaseSettings
from tracking.config import TrackingSettings
from tracking.main import create_app as create_tracking
from tweetshop_contracts import topics
from tweetshop_devstack.infra import free_port
from tweetshop_devstack.pytest_plugin import KafkaServer, ScratchDatabase
from tweetshop_devstack.seed import order_body
from tweetshop_devstack.services import BY_NAME, service_env
from tweetshop_devstack.testing import eventually_async as eventually
from tweetshop_platform import telemetry
from webapp.config import WebappSettings
from webapp.main import create_app as create_webapp

S = TypeVar("S", bound=BaseSettings)
SERVICES = ("catalog", "feed", "checkout", "tracking")


@contextlib.contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """``variables`` as the only TWEETSHOP_* variables while a settings object reads them."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("TWEETSHOP_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(variables)
    try:
        yield
    finally:
        for key in variables:
            os.environ.pop(key, None)
        os.environ.update(saved)


def settings_of(cls: type[S], variables: Mapping[str, str]) -> S:
    with environment(variables):
        return cls()


@contextlib.asynccontextmanager
async def serving(apps: Mapping[str, FastAPI]) -> AsyncIterator[dict[str, str]]:
    """Each app on a real uvicorn server on a free port, started side by side; their base URLs. Stopped after."""
    servers: dict[str, tuple[uvicorn.Server, asyncio.Task[None], int]] = {}
    for name, app in apps.items():
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on", proxy_headers=False)
        )
        servers[name] = (server, asyncio.create_task(server.serve()), port)
    try:
        for server, task, _ in servers.values():
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        yield {name: f"http://127.0.0.1:{port}" for name, (_, _, port) in servers.items()}
    finally:
        for server, _, _ in servers.values():
            server.should_exit = True
        await asyncio.gather(*(task for _, task, _ in servers.values()), return_exceptions=True)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.export_to(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        telemetry.export_to(None)


@pytest.fixture
async def webapp(
    spans: InMemorySpanExporter, database: ScratchDatabase, kafka_server: KafkaServer, stripe_base_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The five apps, started in this process (the spans fixture first: their tracers export to it)."""
    namespace = f"trace{uuid.uuid4().hex[:8]}."
    settings_classes: dict[str, type[BaseSettings]] = {
        "catalog": CatalogSettings,
        "feed": FeedSettings,
        "checkout": CheckoutSettings,
        "tracking": TrackingSettings,
    }
    makers = {"catalog": create_catalog, "feed": create_feed, "checkout": create_checkout, "tracking": create_tracking}
    apps: dict[str, FastAPI] = {}
    for name in SERVICES:
        definition = BY_NAME[name]
        variables = service_env(
            definition,
            http_port=definition.port,
            database_url=await database.provision(name),
            kafka_bootstrap=kafka_server.bootstrap_servers,
            kafka_idempotence=kafka_server.is_apache,
            stripe_base_url=stripe_base_url if definition.uses_stripe else None,
            topic_namespace=namespace,
            log_format="console",
            high_rate_limits=True,
        )
        variables |= {"TWEETSHOP_LOG_LEVEL": "WARNING", "TWEETSHOP_PAYMENT_POLL_INTERVAL_S": "0.2"}
        apps[name] = makers[name](settings_of(settings_classes[name], variables))  # type: ignore[operator]
    async with serving(apps) as urls:
        # The web app reaches them over real HTTP: the trace context travels in the traceparent header.
        web = create_webapp(
            settings_of(
                WebappSettings,
                {"TWEETSHOP_ENVIRONMENT": "development", **{f"TWEETSHOP_{n.upper()}_URL": u for n, u in urls.items()}},
            )
        )
        # The buyer's browser: no span of its own, so the web app's request is the trace's root.
        async with (
            web.router.lifespan_context(web),
            httpx.AsyncClient(
                # The topic namespace rides along for the test (the gateway passes no such header on).
                transport=httpx.ASGITransport(app=web),
                base_url="http://webapp",
                headers={"x-test-namespace": namespace},
            ) as client,
        ):
            yield client


def service_of(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def attribute(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


class Trace:
    """The finished spans of one trace, and the parent → children walk the assertions make."""

    def __init__(self, spans: list[ReadableSpan]) -> None:
        self.spans = spans
        self.by_id = {s.context.span_id: s for s in spans if s.context is not None}

    def roots(self) -> list[ReadableSpan]:
        return [s for s in self.spans if s.parent is None or s.parent.span_id not in self.by_id]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        assert parent.context is not None
        return [s for s in self.spans if s.parent is not None and s.parent.span_id == parent.context.span_id]

    def child(self, parent: ReadableSpan, service: str, kind: SpanKind, name: str, **attributes: Any) -> ReadableSpan:
        """The one child of ``parent`` made by ``service`` with this kind, name and attributes."""
        found = [
            s
            for s in self.children(parent)
            if service_of(s) == service
            and s.kind == kind
            and s.name == name
            and all(attribute(s, k) == v for k, v in attributes.items())
        ]
        described = [(service_of(s), s.kind.name, s.name, attribute(s, "tweetshop.event_type")) for s in self.spans]
        assert len(found) == 1, f"{service} {kind.name} {name!r} {attributes} under {parent.name!r}; spans: {described}"
        return found[0]

    def publish_and_consume(
        self, parent: ReadableSpan, producer: str, topic: str, event_type: str, consumer: str
    ) -> ReadableSpan:
        """``parent`` → producer's send of ``event_type`` on ``topic`` → consumer's process of it."""
        send = self.child(parent, producer, SpanKind.PRODUCER, f"send {topic}", **{"tweetshop.event_type": event_type})
        return self.child(send, consumer, SpanKind.CONSUMER, f"process {topic}", **{"tweetshop.event_type": event_type})


async def test_one_purchase_is_one_trace_across_every_service_and_hop(
    webapp: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    # A merchant, a product and its tweet (traces of their own).
    merchant = (
        await webapp.post("/api/catalog/merchants", json={"handle": f"m{uuid.uuid4().hex[:8]}", "name": "M"})
    ).json()
    key = {"Authorization": f"Bearer {merchant['api_key']}"}
    product = await webapp.post(
        "/api/catalog/products",
        json={"merchant_id": merchant["id"], "title": "Mug", "price_minor": 1500, "currency": "EUR", "stock": 3},
        headers=key,
    )
    assert product.status_code == 201, product.text

    async def tweeted() -> dict[str, Any] | None:
        body = {"merchant_id": merchant["id"], "text": "Mugs!", "product_id": product.json()["id"]}
        answer = await webapp.post("/api/feed/tweets", json=body, headers=key)
        return dict(answer.json()) if answer.status_code == 201 else None

    tweet = await eventually(tweeted, timeout=30, what="feed to know the merchant and the product")

    def allocation_applied() -> bool:
        # Catalog allocated the 3 units to checkout at the listing: once checkout has them, the order is reserved
        # in its own POST (the trace below is that path's).
        return any(
            service_of(s) == "checkout"
            and s.kind == SpanKind.CONSUMER
            and attribute(s, "tweetshop.event_type") == "StockAllocated"
            for s in spans.get_finished_spans()
        )

    await eventually(allocation_applied, timeout=30, what="checkout to have the allocation")

    async def ordered() -> httpx.Response | None:
        body = order_body(tweet["id"], product.json()["id"], quantity=1, payment_method="pm_card_visa")
        answer = await webapp.post("/api/checkout/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
        return None if answer.status_code == 404 else answer  # checkout has not read the tweet yet

    placed = await eventually(ordered, timeout=30, what="checkout to know the tweet")
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]

    # The purchase's trace: the one whose checkout SERVER span answered 202 to POST /orders.
    [post] = [
        s
        for s in spans.get_finished_spans()
        if service_of(s) == "checkout" and s.name == "POST /orders" and attribute(s, "http.response.status_code") == 202
    ]
    assert post.context is not None
    trace_id = post.context.trace_id

    def the_trace() -> Trace:
        return Trace(
            [s for s in spans.get_finished_spans() if s.context is not None and s.context.trace_id == trace_id]
        )

    def shipment_seen() -> Trace | None:
        # Down to checkout reading ShipmentCreated (it shows the buyer the tracking URL).
        t = the_trace()
        return (
            t
            if any(
                attribute(s, "tweetshop.event_type") == "ShipmentCreated" and s.kind == SpanKind.CONSUMER
                for s in t.spans
            )
            else None
        )

    t = await eventually(shipment_seen, timeout=30, what="the shipment's events to be consumed in the purchase's trace")

    # One root: the web app's SERVER span; every other span's parent is in the trace.
    [root] = t.roots()
    assert service_of(root) == "webapp" and root.kind == SpanKind.SERVER
    assert root.name == "POST /api/{service}/{path:path}"
    # HTTP: web app → (client span, traceparent header) → checkout.
    call = next(s for s in t.children(root) if s.kind == SpanKind.CLIENT and service_of(s) == "webapp")
    assert str(attribute(call, "url.full")).endswith("/orders") and attribute(call, "http.request.method") == "POST"
    assert t.child(call, "checkout", SpanKind.SERVER, "POST /orders") is post
    # Kafka, through the outbox: OrderPlaced → catalog records the reservation → StockReserved → checkout.
    ns = webapp.headers["x-test-namespace"]
    reserve = t.publish_and_consume(post, "checkout", f"{ns}{topics.CHECKOUT_ORDERS}", "OrderPlaced", "catalog")
    t.publish_and_consume(reserve, "catalog", f"{ns}{topics.CATALOG_RESERVATIONS}", "StockReserved", "checkout")
    # Reserved from the allocation in the POST: the payment worker continues the POST's trace (not the
    # StockReserved's, which it did not wait for); it charges with Stripe.
    settle = t.child(post, "checkout", SpanKind.INTERNAL, "settle payment")
    stripe = t.child(settle, "checkout", SpanKind.CLIENT, "stripe payment_intents.create")
    assert attribute(stripe, "peer.service") == "stripe" and attribute(stripe, "rpc.method") == "payment_intents.create"
    assert not any("pm_card" in str(v) or "sk_test" in str(v) for v in (stripe.attributes or {}).values())
    # OrderPaid → catalog (the reservation becomes a sale) and tracking (the shipment) → ShipmentCreated.
    paid = t.child(
        settle,
        "checkout",
        SpanKind.PRODUCER,
        f"send {ns}{topics.CHECKOUT_ORDERS}",
        **{"tweetshop.event_type": "OrderPaid"},
    )
    consumers = {service_of(s) for s in t.children(paid) if s.kind == SpanKind.CONSUMER}
    assert {"catalog", "tracking"} <= consumers, consumers
    shipping = t.child(paid, "tracking", SpanKind.CONSUMER, f"process {ns}{topics.CHECKOUT_ORDERS}")
    t.publish_and_consume(shipping, "tracking", f"{ns}{topics.TRACKING_SHIPMENTS}", "ShipmentCreated", "checkout")
    # The trace is this purchase's alone: its messages are keyed by the order, its product (the stock change
    # catalog announces) and its shipment.
    assert {service_of(s) for s in t.spans} >= {"webapp", "checkout", "catalog", "feed", "tracking"}
    keys = {attribute(s, "messaging.kafka.message.key") for s in t.spans} - {None}
    assert {order_id, product.json()["id"]} <= keys and len(keys) == 3, keys
