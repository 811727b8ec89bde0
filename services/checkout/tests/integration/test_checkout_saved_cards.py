"""Saved cards against the real broker, Postgres and localstripe: save with the first purchase, pay with the saved
card (only its pm_ id is sent), 3-D Secure still asked, list and remove both ways, someone else's card refused.

Cards are made as Stripe.js makes them (the number goes to Stripe, only the pm_ id to checkout).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Checkout

VISA = "4242424242424242"
THREE_D_SECURE = "4000002760003184"  # the bank asks for 3-D Secure on every payment


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_buyer(checkout: Checkout) -> str:
    async with checkout.http() as http:
        response = await http.post("/buyers")
    assert response.status_code == 201, response.text
    return str(response.json()["credential"])


async def new_card(checkout: Checkout, number: str = VISA) -> str:
    """What Stripe.js does in the browser."""
    card = {"card[number]": number, "card[exp_month]": "12", "card[exp_year]": "2031", "card[cvc]": "123"}
    async with checkout.stripe_http() as stripe:
        made = await stripe.post("/v1/payment_methods", data={"type": "card", **card})
    assert made.status_code == 200, made.text
    return str(made.json()["id"])


async def stripe_get(checkout: Checkout, path: str) -> dict[str, Any]:
    async with checkout.stripe_http() as stripe:
        response = await stripe.get(path)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def place(
    checkout: Checkout, credential: str | None, payment_method: str, *, save_card: bool | None = None
) -> tuple[httpx.Response, Any]:
    """POST /orders for a new product (waiting while checkout has not read it); the answer and the product."""
    product = await checkout.list_product()
    body = checkout.order_body(product.product_id, payment_method=payment_method)
    if save_card is not None:
        body["save_card"] = save_card
    headers = {"Idempotency-Key": str(uuid.uuid4()), **(bearer(credential) if credential else {})}

    async def attempt() -> httpx.Response | None:
        async with checkout.http() as http:
            response = await http.post("/orders", json=body, headers=headers)
        known = not (response.status_code == 404 and response.json()["error"] == "unknown_product")
        return response if known else None

    return await checkout.eventually(attempt, what="checkout to know the product"), product


async def buy(
    checkout: Checkout, credential: str, payment_method: str, *, save_card: bool = False, three_d_secure: bool = False
) -> dict[str, Any]:
    """A whole purchase: placed, stock reserved, paid (through 3-D Secure when the bank asks); the paid order."""
    response, product = await place(checkout, credential, payment_method, save_card=save_card)
    assert response.status_code == 202, response.text
    order = dict(response.json())
    await checkout.reserve(order, product)
    if three_d_secure:
        waiting = await checkout.until_status(order, "requires_action")
        await checkout.authenticate(waiting, success=True)
    return await checkout.until_status(order, "paid")


async def cards_of(checkout: Checkout, credential: str | None) -> httpx.Response:
    async with checkout.http() as http:
        return await http.get("/buyers/me/cards", headers=bearer(credential) if credential else {})


async def remove(checkout: Checkout, credential: str | None, payment_method: str) -> httpx.Response:
    async with checkout.http() as http:
        return await http.delete(f"/buyers/me/cards/{payment_method}", headers=bearer(credential) if credential else {})


async def test_a_card_saved_with_the_first_purchase_pays_the_next_one_by_its_id_alone(checkout: Checkout) -> None:
    ada = await new_buyer(checkout)
    assert (await cards_of(checkout, ada)).json() == {"cards": []}
    card = await new_card(checkout)

    first = await buy(checkout, ada, card, save_card=True)
    listed = (await cards_of(checkout, ada)).json()["cards"]
    assert listed == [{"id": card, "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2031}]
    intent = await stripe_get(checkout, f"/v1/payment_intents/{first['payment_intent_id']}")
    customer_id = intent["customer"]
    assert customer_id.startswith("cus_")
    customer = await stripe_get(checkout, f"/v1/customers/{customer_id}")
    # Only the opaque buyer id goes to Stripe: no email, no name, no address.
    async with checkout.http() as http:
        buyer_id = (await http.get("/buyers/me", headers=bearer(ada))).json()["id"]
    assert customer["metadata"] == {"buyer_id": buyer_id}
    assert customer["email"] is None and customer["name"] is None

    # The next purchase sends the saved card's id and nothing else of it; it is charged on the same Customer.
    second = await buy(checkout, ada, card)
    again = await stripe_get(checkout, f"/v1/payment_intents/{second['payment_intent_id']}")
    assert again["customer"] == customer_id and again["payment_method"] == card
    assert len((await cards_of(checkout, ada)).json()["cards"]) == 1
    rows = await checkout.sql("SELECT stripe_customer_id FROM buyers WHERE stripe_customer_id = $1", customer_id)
    assert len(rows) == 1


async def test_a_purchase_that_does_not_ask_to_save_keeps_no_card(checkout: Checkout) -> None:
    bob = await new_buyer(checkout)
    paid = await buy(checkout, bob, await new_card(checkout))
    assert (await stripe_get(checkout, f"/v1/payment_intents/{paid['payment_intent_id']}"))["customer"] is None
    assert (await cards_of(checkout, bob)).json() == {"cards": []}
    assert (
        await checkout.sql(
            "SELECT stripe_customer_id FROM buyers WHERE stripe_customer_id IS NOT NULL "
            "AND id = (SELECT buyer_account FROM orders WHERE id = $1)",
            uuid.UUID(paid["id"]),
        )
    ) == []


async def test_someone_elses_saved_card_is_refused_and_nothing_is_charged(checkout: Checkout) -> None:
    ada, eve = await new_buyer(checkout), await new_buyer(checkout)
    card = await new_card(checkout)
    await buy(checkout, ada, card, save_card=True)
    charged_before = await charges_of(checkout, card)

    for save_card in (False, True):
        refused, _ = await place(checkout, eve, card, save_card=save_card)
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"] == "payment_method_not_found"
    async with checkout.http() as http:
        eves_orders = (await http.get("/buyers/me/orders", headers=bearer(eve))).json()["orders"]
    assert eves_orders == []
    # An unknown card is the same 404; saving a card needs an account.
    unknown, _ = await place(checkout, eve, "pm_" + "x" * 24)
    assert unknown.status_code == 404, unknown.text
    anonymous, _ = await place(checkout, None, await new_card(checkout), save_card=True)
    assert anonymous.status_code == 422 and anonymous.json()["error"] == "save_card_needs_account", anonymous.text
    assert await charges_of(checkout, card) == charged_before


async def test_a_saved_card_is_refused_without_its_buyers_credential(checkout: Checkout) -> None:
    """A card saved on a buyer's Customer is theirs: an order without a credential cannot pay with it (real Stripe
    would refuse to confirm it without the Customer; localstripe would charge it), whoever learnt its id."""
    ada = await new_buyer(checkout)
    card = await new_card(checkout)
    await buy(checkout, ada, card, save_card=True)
    charged_before = await charges_of(checkout, card)

    refused, product = await place(checkout, None, card)
    assert refused.status_code == 404, refused.text
    assert refused.json()["error"] == "payment_method_not_found"
    assert await checkout.sql("SELECT id FROM orders WHERE product_id = $1", product.product_id) == []
    # Its buyer still pays with it, and a fresh card still buys without an account.
    await buy(checkout, ada, card)
    fresh, _ = await place(checkout, None, await new_card(checkout))
    assert fresh.status_code == 202, fresh.text
    assert await charges_of(checkout, card) == charged_before + 1


async def charges_of(checkout: Checkout, payment_method: str) -> int:
    """How many PaymentIntents Stripe holds for this card (localstripe has no filter: page through all)."""
    count = 0
    params: dict[str, Any] = {"limit": 100}
    async with checkout.stripe_http() as stripe:
        while True:
            page = (await stripe.get("/v1/payment_intents", params=params)).json()
            count += sum(1 for pi in page["data"] if pi.get("payment_method") == payment_method)
            if not page["has_more"]:
                return count
            params["starting_after"] = page["data"][-1]["id"]


async def test_cards_are_listed_and_removed_by_their_buyer_only(checkout: Checkout) -> None:
    ada, eve = await new_buyer(checkout), await new_buyer(checkout)
    card = await new_card(checkout)
    await buy(checkout, ada, card, save_card=True)

    assert (await cards_of(checkout, None)).status_code == 401
    assert (await cards_of(checkout, "tsb_" + "x" * 43)).status_code == 401
    assert (await cards_of(checkout, eve)).json() == {"cards": []}
    assert (await remove(checkout, None, card)).status_code == 401
    for stranger in (eve,):
        refused = await remove(checkout, stranger, card)
        assert refused.status_code == 404 and refused.json()["error"] == "payment_method_not_found", refused.text
    assert (await remove(checkout, ada, "not-a-card")).status_code == 404
    assert [c["id"] for c in (await cards_of(checkout, ada)).json()["cards"]] == [card]

    removed = await remove(checkout, ada, card)
    assert removed.status_code == 204, removed.text
    assert (await cards_of(checkout, ada)).json() == {"cards": []}
    assert (await stripe_get(checkout, f"/v1/payment_methods/{card}"))["customer"] is None
    assert (await remove(checkout, ada, card)).status_code == 404


async def test_a_saved_card_whose_bank_asks_for_3d_secure_still_asks_and_then_pays(checkout: Checkout) -> None:
    ada = await new_buyer(checkout)
    card = await new_card(checkout, THREE_D_SECURE)
    await buy(checkout, ada, card, save_card=True, three_d_secure=True)
    assert [c["last4"] for c in (await cards_of(checkout, ada)).json()["cards"]] == ["3184"]
    paid = await buy(checkout, ada, card, three_d_secure=True)
    assert paid["status"] == "paid"


async def test_a_customer_made_by_an_interrupted_attempt_is_found_again(checkout: Checkout) -> None:
    ada = await new_buyer(checkout)
    async with checkout.http() as http:
        buyer_id = (await http.get("/buyers/me", headers=bearer(ada))).json()["id"]
    # A crash after Stripe made the Customer and before checkout recorded it: the attempt was counted.
    async with checkout.stripe_http() as stripe:
        made = (await stripe.post("/v1/customers", data={"metadata[buyer_id]": buyer_id})).json()
    await checkout.sql("UPDATE buyers SET stripe_customer_attempts = 1 WHERE id = $1", buyer_id)

    paid = await buy(checkout, ada, await new_card(checkout), save_card=True)
    assert (await stripe_get(checkout, f"/v1/payment_intents/{paid['payment_intent_id']}"))["customer"] == made["id"]
    assert (await checkout.sql("SELECT stripe_customer_id FROM buyers WHERE id = $1", buyer_id))[0][0] == made["id"]


async def test_deleting_a_buyers_customer_leaves_none_of_its_cards_chargeable(checkout: Checkout) -> None:
    """What account deletion asks of the gateway: the Customer gone, its cards detached (localstripe keeps them
    attached to a deleted Customer, so the gateway detaches them first)."""
    from checkout.config import CheckoutSettings
    from checkout.gateway import PaymentDeclined, StripeGateway
    from tweetshop_devstack.services import DEV_STRIPE_API_KEY

    card = await new_card(checkout)
    async with checkout.stripe_http() as stripe:
        customer = (await stripe.post("/v1/customers", data={"metadata[buyer_id]": "ba_" + "2" * 32})).json()["id"]
        attached = await stripe.post(f"/v1/payment_methods/{card}/attach", data={"customer": customer})
    assert attached.status_code == 200, attached.text
    gateway = StripeGateway(
        CheckoutSettings(stripe_api_base=checkout.stripe, stripe_api_key=DEV_STRIPE_API_KEY, log_format="console")
    )
    try:
        assert [c.id for c in await gateway.list_cards(customer)] == [card]
        await gateway.delete_customer(customer)
        with pytest.raises(PaymentDeclined):
            await gateway.delete_customer(customer)  # already gone: the caller takes it as done
    finally:
        await gateway.aclose()
    assert (await stripe_get(checkout, f"/v1/payment_methods/{card}"))["customer"] is None
