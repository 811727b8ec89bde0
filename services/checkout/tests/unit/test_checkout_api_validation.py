"""POST /orders refuses bad input with a clear 4xx before anything is written (no database needed)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from checkout.api import OrderIn, idempotency_key_problem
from checkout.config import CheckoutSettings
from checkout.main import create_app
from fastapi.testclient import TestClient

KEY = "3f0c9b1e-5d7a-4c55-9f3e-2a8b7c6d5e4f"


def a_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
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
    body.update(changes)
    return body


def with_shipping(**changes: Any) -> dict[str, Any]:
    body = a_body()
    body["shipping"] = {**body["shipping"], **changes}
    return body


@pytest.fixture
def client(fake_gateway_class: type[Any]) -> TestClient:
    # No `with`: the lifespan (database, broker) never starts; validation answers before it would be needed.
    settings = CheckoutSettings(log_format="console", database_url="postgresql://nobody@127.0.0.1:1/none")
    return TestClient(create_app(settings, gateway=fake_gateway_class()), raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (a_body(quantity=0), "quantity"),
        (a_body(quantity=101), "quantity"),
        (a_body(quantity="2"), "quantity"),
        (a_body(quantity=1.5), "quantity"),
        (a_body(product_id="mug"), "product_id"),
        (a_body(tweet_id=None), "tweet_id"),
        (with_shipping(lat=90.5), "lat"),
        (with_shipping(lon=-180.01), "lon"),
        (with_shipping(country="FRA"), "country"),
        (with_shipping(country="F1"), "country"),
        (with_shipping(city="   "), "city"),
        (a_body(buyer={"id": "b", "email": "not-an-email"}), "email"),
        (a_body(buyer={"id": "", "email": "ada@example.com"}), "id"),
        (a_body(payment_method="card_visa"), "payment_method"),
        (a_body(price_minor=1), "price_minor"),
        (a_body(currency="EUR"), "currency"),
    ],
)
def test_an_invalid_body_is_refused_with_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/orders", json=body, headers={"Idempotency-Key": KEY})
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert field in response.json()["message"]


def test_a_card_number_is_refused_and_never_echoed(client: TestClient) -> None:
    response = client.post("/orders", json=a_body(payment_method="4242424242424242"), headers={"Idempotency-Key": KEY})
    assert response.status_code == 422
    assert "PaymentMethod id" in response.json()["message"]
    assert "4242424242424242" not in response.text


def test_a_missing_idempotency_key_is_refused_with_400(client: TestClient) -> None:
    response = client.post("/orders", json=a_body())
    assert response.status_code == 400
    assert response.json()["error"] == "idempotency_key_required"


def test_a_guessable_idempotency_key_is_refused_with_400(client: TestClient) -> None:
    response = client.post("/orders", json=a_body(), headers={"Idempotency-Key": "1"})
    assert response.status_code == 400
    assert "16 to 255" in response.json()["message"]


def test_idempotency_keys_like_uuids_are_accepted() -> None:
    assert idempotency_key_problem(str(uuid.uuid4())) is None
    assert idempotency_key_problem(None) is not None
    assert idempotency_key_problem("has spaces in it, sixteen+") is not None


def test_reading_an_order_without_a_token_is_401(client: TestClient) -> None:
    response = client.get(f"/orders/{uuid.uuid4()}")
    assert response.status_code == 401


def test_a_refund_without_a_token_is_401(client: TestClient) -> None:
    assert client.post(f"/orders/{uuid.uuid4()}/refund").status_code == 401


def test_a_refund_of_zero_is_refused_with_422(client: TestClient) -> None:
    response = client.post(
        f"/orders/{uuid.uuid4()}/refund", json={"amount_minor": 0}, headers={"Authorization": "Bearer tso_x"}
    )
    assert response.status_code == 422


def test_a_webhook_with_a_bad_signature_is_refused_with_400(client: TestClient) -> None:
    response = client.post("/webhooks/stripe", content=b'{"id": "evt_1"}', headers={"Stripe-Signature": "t=1,v1=00"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_webhook"


def test_a_webhook_without_a_signature_is_refused_with_400(client: TestClient) -> None:
    assert client.post("/webhooks/stripe", content=b"{}").status_code == 400


def test_the_country_is_normalised_and_surrounding_spaces_dropped() -> None:
    body = copy.deepcopy(a_body())
    body["shipping"]["country"] = "fr"
    body["shipping"]["city"] = "  Paris "
    order = OrderIn.model_validate(body)
    assert (order.shipping.country, order.shipping.city) == ("FR", "Paris")


def test_the_same_order_written_differently_has_the_same_canonical_form() -> None:
    body = a_body()
    spaced = copy.deepcopy(body)
    spaced["buyer"]["email"] = " ada@example.com "
    spaced["shipping"]["country"] = "fr"
    assert OrderIn.model_validate(body).canonical() == OrderIn.model_validate(spaced).canonical()
    assert OrderIn.model_validate(body).canonical() != OrderIn.model_validate(a_body(quantity=2)).canonical()
