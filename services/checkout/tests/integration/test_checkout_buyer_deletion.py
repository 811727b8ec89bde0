"""A buyer's account on checkout.buyers.v1 and its deletion, against the real broker, Postgres and localstripe.

- What checkout tells other services of a buyer (feed checks credentials with it): the opaque id and credential
  hashes only, each in the transaction of its change: issued (a new buyer, a linked device), revoked by hash
  (signed out everywhere), deleted.
- ``DELETE /buyers/me`` both ways: none gets 401, another buyer's credential deletes only that buyer; the right
  buyer's Stripe Customer is deleted, every credential stops, its orders stay without the buyer's personal data,
  and ``BuyerDeleted`` is published. While an order is still being paid: 409, nothing deleted.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Any

import httpx
from tweetshop_contracts import Envelope, topics
from tweetshop_contracts.envelope import Envelope as _Envelope
from tweetshop_devstack.kafka_probe import events_of, read_topic

if TYPE_CHECKING:
    from conftest import Checkout

ENVELOPE_FIELDS = set(_Envelope.model_fields)
# Everything a buyer event may carry besides the envelope: an opaque id and hashes.
BUYER_EVENT_FIELDS = {"buyer_id", "credential_sha256", "credential_sha256s"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def new_buyer(checkout: Checkout) -> dict[str, Any]:
    async with checkout.http() as http:
        response = await http.post("/buyers")
    assert response.status_code == 201, response.text
    return dict(response.json())


async def buyer_events(checkout: Checkout, buyer_id: str, until: int) -> list[Envelope]:
    """checkout.buyers.v1 events of one buyer, read from the start until there are ``until`` of them."""

    def mine(records: list[Any]) -> list[Envelope]:
        return [e for e in events_of(records, topics.CHECKOUT_BUYERS) if getattr(e, "buyer_id", None) == buyer_id]

    records = await read_topic(
        checkout.kafka, checkout.namespace + topics.CHECKOUT_BUYERS, until=lambda rs: len(mine(rs)) >= until
    )
    return mine(records)


async def place_as(checkout: Checkout, credential: str) -> tuple[dict[str, Any], Any]:
    """An order of the buyer (waiting while checkout has not read the product yet): (order, product)."""
    product = await checkout.list_product()
    body = checkout.order_body(product.product_id)
    headers = {"Idempotency-Key": str(uuid.uuid4()), **bearer(credential)}

    async def attempt() -> httpx.Response | None:
        async with checkout.http() as http:
            response = await http.post("/orders", json=body, headers=headers)
        known = not (response.status_code == 404 and response.json()["error"] == "unknown_product")
        return response if known else None

    response = await checkout.eventually(attempt, what="checkout to know the product")
    assert response.status_code == 202, response.text
    return dict(response.json()), product


async def test_buyer_events_carry_the_opaque_id_and_credential_hashes_only(checkout: Checkout) -> None:
    ada = await new_buyer(checkout)
    buyer_id, first = ada["buyer"]["id"], ada["credential"]
    assert first.startswith("tsb_") and first[4:16].isalnum() and first[16] == ".", "the credential carries its birth"
    async with checkout.http() as http:
        code = (await http.post("/buyers/me/link-codes", headers=bearer(first))).json()["code"]
        second = (await http.post("/buyers/link", json={"code": code})).json()["credential"]
        out = await http.post("/buyers/me/sign-out-everywhere", headers=bearer(first))
    assert out.status_code == 200, out.text

    events = await buyer_events(checkout, buyer_id, until=3)
    assert [e.event_type for e in events] == [
        "BuyerCredentialIssued",
        "BuyerCredentialIssued",
        "BuyerCredentialsRevoked",
    ]
    assert [getattr(e, "credential_sha256", None) for e in events[:2]] == [sha256(first), sha256(second)]
    assert sorted(events[2].credential_sha256s) == sorted([sha256(first), sha256(second)])
    for event in events:
        assert event.producer == "checkout" and event.key() == buyer_id
        assert set(event.model_dump()) <= ENVELOPE_FIELDS | BUYER_EVENT_FIELDS, event
        raw = event.to_bytes().decode()
        assert first not in raw and second not in raw, "never a credential, only its hash"


async def test_deleting_the_account_both_ways(checkout: Checkout) -> None:
    ada, bob = await new_buyer(checkout), await new_buyer(checkout)
    ada_id, ada_token = ada["buyer"]["id"], ada["credential"]
    order, product = await place_as(checkout, ada_token)
    await checkout.reserve(order, product)
    await checkout.until_status(order, "paid")
    # The buyer's Stripe Customer, as saving a card makes it.
    async with checkout.stripe_http() as stripe:
        customer = (await stripe.post("/v1/customers", data={"metadata[buyer_id]": ada_id})).json()["id"]
    await checkout.sql("UPDATE buyers SET stripe_customer_id = $2 WHERE id = $1", ada_id, customer)

    async with checkout.http() as http:
        nobody = await http.delete("/buyers/me")
        unknown = await http.delete("/buyers/me", headers=bearer("tsb_" + "x" * 43))
        bobs = await http.delete("/buyers/me", headers=bearer(bob["credential"]))  # deletes bob, and only bob
        still = await http.get("/buyers/me", headers=bearer(ada_token))
    assert nobody.status_code == 401 and unknown.status_code == 401
    assert bobs.status_code == 200 and bobs.json() == {
        "deleted": bob["buyer"]["id"],
        "orders_kept": 0,
        "cards_removed": False,
    }
    assert still.status_code == 200, "another buyer's deletion leaves this one alone"

    async with checkout.http() as http:
        deleted = await http.delete("/buyers/me", headers=bearer(ada_token))
        after = await http.get("/buyers/me", headers=bearer(ada_token))
        again = await http.delete("/buyers/me", headers=bearer(ada_token))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"deleted": ada_id, "orders_kept": 1, "cards_removed": True}
    assert after.status_code == 401 and again.status_code == 401

    async with checkout.stripe_http() as stripe:
        gone = await stripe.get(f"/v1/customers/{customer}")
    assert gone.status_code == 404 or gone.json().get("deleted") is True, gone.text
    (row,) = await checkout.sql(
        """SELECT buyer_email, ship_name, ship_line1, ship_city, ship_country, buyer_account, access_token_vaulted,
                  buyer_erased_at, status, amount_minor FROM orders WHERE id = $1""",
        uuid.UUID(order["id"]),
    )
    assert (row["buyer_email"], row["ship_name"], row["ship_line1"]) == ("", "", "")
    assert row["ship_city"] and row["ship_country"], "country and city stay for the merchant's records"
    assert row["buyer_account"] is None and row["access_token_vaulted"] is None and row["buyer_erased_at"] is not None
    assert (row["status"], row["amount_minor"]) == ("paid", order["amount_minor"])
    assert await checkout.sql("SELECT 1 FROM buyer_credentials WHERE buyer_id = $1", ada_id) == []
    assert await checkout.sql("SELECT 1 FROM buyers WHERE id = $1", ada_id) == []
    # The order's own access token (the tracking link) still reads it, without the buyer's name and street.
    kept = await checkout.get_order(order["id"], order["access_token"])
    assert kept["shipping"]["name"] == "" and kept["shipping"]["line1"] == ""

    events = await buyer_events(checkout, ada_id, until=2)
    assert [e.event_type for e in events] == ["BuyerCredentialIssued", "BuyerDeleted"]
    # The order's own erasure, for tracking (which keeps its places by order): nothing personal on it.
    order_topic = checkout.namespace + topics.CHECKOUT_ORDERS

    def erased(records: list[Any]) -> list[Envelope]:
        return [
            e
            for e in events_of(records, topics.CHECKOUT_ORDERS)
            if e.event_type == "OrderBuyerErased" and str(getattr(e, "order_id", "")) == order["id"]
        ]

    (erasure,) = erased(await read_topic(checkout.kafka, order_topic, until=lambda rs: len(erased(rs)) >= 1))
    assert set(erasure.model_dump()) - ENVELOPE_FIELDS == {"order_id", "product_id", "quantity"}


async def test_an_order_still_being_paid_keeps_the_account(checkout: Checkout) -> None:
    ada = await new_buyer(checkout)
    order, _ = await place_as(checkout, ada["credential"])  # never reserved: pending
    await checkout.keep_worker_away(order["id"])
    async with checkout.http() as http:
        refused = await http.delete("/buyers/me", headers=bearer(ada["credential"]))
        me = await http.get("/buyers/me", headers=bearer(ada["credential"]))
    assert refused.status_code == 409 and refused.json()["error"] == "orders_in_progress", refused.text
    assert me.status_code == 200
    (row,) = await checkout.sql("SELECT buyer_email, buyer_erased_at FROM orders WHERE id = $1", uuid.UUID(order["id"]))
    assert row["buyer_email"] != "" and row["buyer_erased_at"] is None
