"""Real objects for the generated hostile-input tests: each service's stack, a merchant, a product, an order...

Each fixture starts only the processes its service needs (the repository's ``service_process``), makes the
objects whose ids and credentials the generated requests use, and hands back a ``Target``: where the service
answers, which real values to put in path and query parameters, and which bearer credential each request
carries so that it gets past authentication and reaches the body validation and the handler.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from tweetshop_devstack.seed import order_body
from tweetshop_devstack.testing import eventually

OPERATOR_KEY = "openapi-fuzz-operator-key"
ENV = {"TWEETSHOP_OPERATOR_KEY": OPERATOR_KEY}


@dataclass
class Target:
    """One running service under test, with real ids to aim at and live credentials."""

    name: str
    base_url: str
    # Per operation ("GET /products/{product_id}"): parameter sets to draw from besides fully generated ones,
    # e.g. [{"path_parameters": {"product_id": "..."}}] so that requests reach a real object.
    overrides: dict[str, list[dict[str, dict[str, Any]]]] = field(default_factory=dict)
    # Per operation: rewrites a generated case so that it points at real objects (ids, a fresh timestamp),
    # drawn besides the cases as generated.
    aim: dict[str, Callable[[Any], None]] = field(default_factory=dict)
    # (method, path, query) -> the bearer credential for that request, or None for none.
    credential: Callable[[str, str, dict[str, Any]], str | None] = lambda _m, _p, _q: None
    # Called with every response: keeps credentials that an operation rotates up to date.
    observe: Callable[[str, str, int, Any], None] = lambda _m, _p, _s, _b: None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class World:
    """The objects made through the public API before fuzzing."""

    urls: dict[str, str]
    merchant: dict[str, Any] = field(default_factory=dict)
    api_key: str = ""
    product: dict[str, Any] = field(default_factory=dict)
    tweet: dict[str, Any] = field(default_factory=dict)
    order: dict[str, Any] = field(default_factory=dict)
    shipment: dict[str, Any] = field(default_factory=dict)
    courier_token: str = ""


def start(service_process: Any, names: tuple[str, ...]) -> dict[str, str]:
    started = service_process.start_many(names, env=ENV)
    return {s.name: s.base_url for s in started}


def a_merchant_and_product(world: World) -> None:
    catalog = world.urls["catalog"]
    handle = f"fuzz{uuid.uuid4().hex[:8]}"
    r = httpx.post(f"{catalog}/merchants", json={"handle": handle, "name": "Fuzz shop"})
    assert r.status_code == 201, r.text
    world.merchant = r.json()
    world.api_key = world.merchant["api_key"]
    r = httpx.post(
        f"{catalog}/products",
        json={
            "merchant_id": world.merchant["id"],
            "title": "Fuzzed mug",
            "price_minor": 2500,
            "currency": "EUR",
            "stock": 100_000,
        },
        headers=bearer(world.api_key),
    )
    assert r.status_code == 201, r.text
    world.product = r.json()


def a_buyable_tweet(world: World) -> None:
    def post() -> dict[str, Any] | None:
        r = httpx.post(
            f"{world.urls['feed']}/tweets",
            json={"merchant_id": world.merchant["id"], "text": "Fuzzed mug", "product_id": world.product["id"]},
            headers=bearer(world.api_key),
        )
        if r.status_code == 503 and "retry-after" in r.headers:
            return None  # feed has not read the merchant or the product from catalog's topics yet
        assert r.status_code == 201, r.text
        return dict(r.json())

    world.tweet = eventually(post, what="feed to know the merchant and the product")


def a_buyer(world: World) -> str:
    """A buyer account's credential (checkout's ``POST /buyers``)."""
    r = httpx.post(f"{world.urls['checkout']}/buyers")
    assert r.status_code == 201, r.text
    return str(r.json()["credential"])


def a_paid_order(world: World) -> None:
    checkout = world.urls["checkout"]
    body = order_body(world.tweet["id"], world.product["id"], buyer_id="fuzz-buyer", email="fuzz@example.com")
    key = str(uuid.uuid4())

    def post() -> dict[str, Any] | None:
        r = httpx.post(f"{checkout}/orders", json=body, headers={"Idempotency-Key": key})
        if r.status_code == 404:
            return None  # checkout has not read the product or the tweet yet
        assert r.status_code in (200, 202), r.text
        return dict(r.json())

    world.order = eventually(post, what="checkout to know the product and the tweet")

    def paid() -> bool:
        r = httpx.get(f"{checkout}/orders/{world.order['id']}", headers=bearer(world.order["access_token"]))
        assert r.status_code == 200, r.text
        assert r.json()["status"] not in ("failed", "cancelled"), r.text
        return bool(r.json()["status"] == "paid")

    eventually(paid, what="the order to be paid")


def a_shipment_with_a_courier(world: World) -> None:
    tracking = world.urls["tracking"]

    def shipments() -> list[dict[str, Any]] | None:
        r = httpx.get(
            f"{tracking}/shipments",
            params={"order_id": world.order["id"]},
            headers=bearer(world.order["access_token"]),
        )
        if r.status_code == 404 and r.json().get("error") == "unknown_shipment":
            return None  # tracking has not read the OrderPaid yet (its consumer may be fetching at its quiet pace)
        assert r.status_code == 200, r.text
        return list(r.json())

    world.shipment = eventually(shipments, what="a shipment for the paid order")[0]
    r = httpx.post(f"{tracking}/shipments/{world.shipment['id']}/courier-token", headers=bearer(OPERATOR_KEY))
    assert r.status_code == 200, r.text
    world.courier_token = r.json()["courier_token"]


def with_fields(**values: Any) -> Callable[[Any], None]:
    """A case rewrite: the fields the generated body has among ``values`` get the real value."""

    def aim(case: Any) -> None:
        if isinstance(case.body, dict):
            case.body = {k: (str(values[k]) if k in values else v) for k, v in case.body.items()}

    return aim


def recorded_now(case: Any) -> None:
    """A case rewrite: each generated GPS fix is recorded now (generated instants are mostly far off)."""
    if isinstance(case.body, dict) and isinstance(case.body.get("points"), list):
        now = datetime.now(UTC).isoformat()
        points = [
            {**p, "recorded_at": now} if isinstance(p, dict) and "recorded_at" in p else p for p in case.body["points"]
        ]
        case.body = {**case.body, "points": points}


def an_order_from_the_tweet(tweet_id: str, product_id: str) -> Callable[[Any], None]:
    """A case rewrite: the order is for the real tweet and product, under a well-formed Idempotency-Key."""
    fields = with_fields(tweet_id=tweet_id, product_id=product_id)

    def aim(case: Any) -> None:
        fields(case)
        case.headers = {**(case.headers or {}), "Idempotency-Key": str(uuid.uuid4())}

    return aim


def path(**values: Any) -> dict[str, dict[str, Any]]:
    return {"path_parameters": {k: str(v) for k, v in values.items()}}


def query(**values: Any) -> dict[str, dict[str, Any]]:
    return {"query": {k: str(v) for k, v in values.items()}}


@pytest.fixture
def catalog_target(service_process: Any) -> Target:
    world = World(start(service_process, ("catalog",)))
    a_merchant_and_product(world)
    m, p = world.merchant["id"], world.product["id"]

    def observe(method: str, route: str, status: int, body: Any) -> None:
        if route == "/merchants/{merchant_id}/api-key" and status == 200:
            world.api_key = body["api_key"]  # the fuzzer just rotated the key it uses

    return Target(
        "catalog",
        world.urls["catalog"],
        overrides={
            "GET /merchants": [query(handle=world.merchant["handle"])],
            "GET /merchants/{merchant_id}": [path(merchant_id=m)],
            "POST /merchants/{merchant_id}/api-key": [path(merchant_id=m)],
            "GET /products": [query(merchant_id=m)],
            "GET /products/{product_id}": [path(product_id=p)],
            "PATCH /products/{product_id}": [path(product_id=p)],
        },
        aim={"POST /products": with_fields(merchant_id=m)},
        credential=lambda _m, _p, _q: world.api_key,
        observe=observe,
    )


@pytest.fixture
def feed_target(service_process: Any) -> Target:
    world = World(start(service_process, ("catalog", "feed")))
    a_merchant_and_product(world)
    a_buyable_tweet(world)
    m = world.merchant["id"]
    return Target(
        "feed",
        world.urls["feed"],
        overrides={
            "GET /tweets/{tweet_id}": [path(tweet_id=world.tweet["id"])],
            "GET /timeline": [query(merchant_id=m)],
            "GET /follows": [query(buyer_id="fuzz-buyer")],
            "DELETE /follows": [query(merchant_id=m, buyer_id="fuzz-buyer")],
        },
        aim={
            "POST /tweets": with_fields(merchant_id=m, product_id=world.product["id"]),
            "POST /follows": with_fields(merchant_id=m),
        },
        # The merchant's key posts tweets; follows and the timeline are an anonymous buyer id's here (a buyer
        # account's credential needs checkout: services/feed/tests cover it both ways).
        credential=lambda _m, route, _q: world.api_key if route.startswith("/tweets") else None,
    )


@pytest.fixture
def checkout_target(service_process: Any) -> Target:
    world = World(start(service_process, ("catalog", "feed", "checkout")))
    a_merchant_and_product(world)
    a_buyable_tweet(world)
    a_paid_order(world)
    order = path(order_id=world.order["id"])
    buyer = {"credential": a_buyer(world)}

    def credential(method: str, route: str, params: dict[str, Any]) -> str | None:
        if route.startswith("/ops/"):
            return OPERATOR_KEY
        if route == "/orders/{order_id}/refund":
            return world.api_key  # refunds are the merchant's
        if route.startswith("/buyers/me"):
            return buyer["credential"]  # the buyer's own account and orders
        return str(world.order["access_token"])

    def observe(method: str, route: str, status: int, body: Any) -> None:
        signed_out = route == "/buyers/me/sign-out-everywhere" and status == 200
        deleted = method == "DELETE" and route == "/buyers/me" and status == 200
        if signed_out or deleted:
            buyer["credential"] = a_buyer(world)  # signed out: the next requests need a live credential again

    return Target(
        "checkout",
        world.urls["checkout"],
        overrides={
            "GET /orders/{order_id}": [order],
            "POST /orders/{order_id}/refund": [order],
            "POST /orders/{order_id}/cancel": [order],
        },
        aim={"POST /orders": an_order_from_the_tweet(world.tweet["id"], world.product["id"])},
        credential=credential,
        observe=observe,
    )


@pytest.fixture
def tracking_target(service_process: Any) -> Target:
    world = World(start(service_process, ("catalog", "feed", "checkout", "tracking")))
    a_merchant_and_product(world)
    a_buyable_tweet(world)
    a_paid_order(world)
    a_shipment_with_a_courier(world)
    sid = world.shipment["id"]
    shipment = path(shipment_id=sid)

    def credential(method: str, route: str, params: dict[str, Any]) -> str | None:
        if route == "/shipments/{shipment_id}/locations" and method == "POST":
            return world.courier_token
        if route == "/shipments/{shipment_id}/courier-token" or (route == "/shipments" and "order_id" not in params):
            return OPERATOR_KEY
        return str(world.order["access_token"])

    def observe(method: str, route: str, status: int, body: Any) -> None:
        if route == "/shipments/{shipment_id}/courier-token" and status == 200 and body["shipment_id"] == sid:
            world.courier_token = body["courier_token"]  # the fuzzer just replaced the courier's token

    return Target(
        "tracking",
        world.urls["tracking"],
        overrides={
            "GET /shipments": [query(order_id=world.order["id"]), query(status="label_created")],
            "GET /shipments/{shipment_id}": [shipment],
            "GET /shipments/{shipment_id}/locations": [shipment],
            "POST /shipments/{shipment_id}/locations": [shipment],
            "POST /shipments/{shipment_id}/courier-token": [shipment],
            "GET /shipments/{shipment_id}/stream": [shipment],
            "GET /track/{order_id}": [path(order_id=world.order["id"])],
        },
        aim={"POST /shipments/{shipment_id}/locations": recorded_now},
        credential=credential,
        observe=observe,
    )
