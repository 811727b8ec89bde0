"""Purchases are admitted in turn, at most as many as the API has database connections: anonymous ones ahead of
FastAPI (refusals.py), signed-in ones in the route after Stripe's answer about the card; each exactly once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from checkout import refusals
from checkout.config import CheckoutSettings
from checkout.main import create_app
from checkout.usecases import buyers, cards, orders
from fastapi.testclient import TestClient
from tweetshop_platform.errors import Conflict
from tweetshop_platform.runtime import ServiceRuntime

SLOTS = 3


async def test_at_most_slots_at_once_then_in_arrival_order() -> None:
    admission = refusals.Admission(2)
    inside: list[int] = []
    order: list[int] = []
    release = asyncio.Event()

    async def purchase(n: int) -> None:
        async with admission.enter({}):
            order.append(n)
            inside.append(n)
            await release.wait()

    tasks = [asyncio.create_task(purchase(n)) for n in range(6)]
    await asyncio.sleep(0.01)
    assert inside == [0, 1]  # two slots: the other four wait
    release.set()
    await asyncio.gather(*tasks)
    assert order == list(range(6))


async def test_a_request_admitted_once_is_not_admitted_again_further_in() -> None:
    admission = refusals.Admission(1)
    scope: dict[str, Any] = {}
    async with admission.enter(scope), admission.enter(scope):  # with one slot, a second take would never return
        pass
    async with asyncio.timeout(1):
        async with admission.enter({}):  # the slot was given back
            pass


def a_body() -> dict[str, Any]:
    return {
        "tweet_id": str(uuid.uuid4()),
        "product_id": str(uuid.uuid4()),
        "quantity": 1,
        "buyer": {"id": "buyer-1", "email": "ada@example.com"},
        "shipping": {
            "name": "Ada",
            "line1": "1 rue de Rivoli",
            "city": "Paris",
            "country": "FR",
            "lat": 48.8,
            "lon": 2.3,
        },
        "payment_method": "pm_card_visa",
    }


@pytest.fixture
def admitted_places(monkeypatch: pytest.MonkeyPatch, fake_gateway_class: type[Any]) -> tuple[TestClient, list[int]]:
    """checkout's API (no lifespan) whose ``place_order`` records how many admission slots were free while it ran,
    then refuses the purchase; a buyer credential stands for an account without a database."""
    settings = CheckoutSettings(
        log_format="console", database_url="postgresql://nobody@127.0.0.1:1/none", database_pool_max=SLOTS
    )
    app = create_app(settings, gateway=fake_gateway_class())
    free_slots: list[int] = []

    async def place_order(*_: Any, **__: Any) -> Any:
        free_slots.append(app.state.purchase_admission._slots._value)
        raise Conflict("sold out", code="insufficient_stock")

    async def authenticate_pool(_pool: Any, _credential: str) -> buyers.Account:
        return buyers.Account(id="acct_" + "a" * 24, created_at=datetime.now(UTC), devices=1, vault_key="k")

    async def payment_customer_for(*_: Any, **__: Any) -> str | None:
        return None

    monkeypatch.setattr(ServiceRuntime, "pool", property(lambda _: None))  # never started: no database here
    monkeypatch.setattr(orders, "place_order", place_order)
    monkeypatch.setattr(buyers, "authenticate_pool", authenticate_pool)
    monkeypatch.setattr(cards, "payment_customer_for", payment_customer_for)
    return TestClient(app, raise_server_exceptions=False), free_slots


def test_an_anonymous_purchase_is_admitted_once(admitted_places: tuple[TestClient, list[int]]) -> None:
    client, free_slots = admitted_places
    answer = client.post("/orders", json=a_body(), headers={"Idempotency-Key": str(uuid.uuid4())})
    assert answer.status_code == 409, answer.text
    assert free_slots == [SLOTS - 1]


def test_a_signed_in_purchase_is_admitted_in_the_route(admitted_places: tuple[TestClient, list[int]]) -> None:
    client, free_slots = admitted_places
    credential = "tsb_" + "x" * 40
    answer = client.post(
        "/orders",
        json=a_body(),
        headers={"Idempotency-Key": str(uuid.uuid4()), "Authorization": f"Bearer {credential}"},
    )
    assert answer.status_code == 409, answer.text
    assert free_slots == [SLOTS - 1]
