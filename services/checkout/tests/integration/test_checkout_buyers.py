"""Buyer accounts against the real broker, Postgres and localstripe: credentials, "my orders", link codes, sign out.

Every buyer-owned route both ways: the right buyer gets in, no credential gets 401, another buyer gets 404 (or
an empty list: whether an order exists is private to its buyer).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import httpx
from tweetshop_contracts import OrderPlaced

if TYPE_CHECKING:
    from conftest import Checkout


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_buyer(checkout: Checkout) -> dict[str, Any]:
    async with checkout.http() as http:
        response = await http.post("/buyers")
    assert response.status_code == 201, response.text
    created = dict(response.json())
    assert created["credential"].startswith("tsb_")
    assert created["buyer"]["id"].startswith("ba_") and created["buyer"]["devices"] == 1
    return created


async def place_as(checkout: Checkout, credential: str | None, *, buyer_id: str = "someone-else") -> httpx.Response:
    """POST /orders with a buyer credential (waiting while checkout has not read the product yet)."""
    product = await checkout.list_product()
    body = checkout.order_body(product.product_id)
    body["buyer"]["id"] = buyer_id
    headers = {"Idempotency-Key": str(uuid.uuid4()), **(bearer(credential) if credential else {})}

    async def attempt() -> httpx.Response | None:
        async with checkout.http() as http:
            response = await http.post("/orders", json=body, headers=headers)
        known = not (response.status_code == 404 and response.json()["error"] == "unknown_product")
        return response if known else None

    return await checkout.eventually(attempt, what="checkout to know the product")


async def my_orders(checkout: Checkout, credential: str | None, **params: Any) -> httpx.Response:
    async with checkout.http() as http:
        return await http.get("/buyers/me/orders", params=params, headers=bearer(credential) if credential else {})


async def link_code(checkout: Checkout, credential: str) -> str:
    async with checkout.http() as http:
        response = await http.post("/buyers/me/link-codes", headers=bearer(credential))
    assert response.status_code == 201, response.text
    code = str(response.json()["code"])
    assert len(code) == 9 and code[4] == "-"
    return code


async def link(checkout: Checkout, code: str) -> httpx.Response:
    async with checkout.http() as http:
        return await http.post("/buyers/link", json={"code": code})


# --- the account ----------------------------------------------------------------------------------------------


async def test_a_new_buyer_gets_a_credential_once_and_only_that_credential_reads_the_account(
    checkout: Checkout,
) -> None:
    ada = await new_buyer(checkout)
    async with checkout.http() as http:
        me = await http.get("/buyers/me", headers=bearer(ada["credential"]))
        none = await http.get("/buyers/me")
        unknown = await http.get("/buyers/me", headers=bearer("tsb_" + "x" * 43))
        not_a_buyer = await http.get("/buyers/me", headers=bearer("tso_an-order-access-token"))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == ada["buyer"]["id"] and "credential" not in me.json()
    assert [r.status_code for r in (none, unknown, not_a_buyer)] == [401, 401, 401]
    assert unknown.json()["error"] == "invalid_buyer_credential"
    # Only the hash is kept.
    rows = await checkout.sql("SELECT token_hash FROM buyer_credentials WHERE buyer_id = $1", ada["buyer"]["id"])
    assert len(rows) == 1 and ada["credential"] not in rows[0]["token_hash"]


# --- orders belong to the buyer -------------------------------------------------------------------------------


async def test_an_order_placed_with_a_credential_is_the_buyers_whatever_the_body_says(checkout: Checkout) -> None:
    ada, bob = await new_buyer(checkout), await new_buyer(checkout)
    placed = await place_as(checkout, ada["credential"], buyer_id=bob["buyer"]["id"])
    assert placed.status_code == 202, placed.text
    order = placed.json()

    events = await checkout.order_events(order["id"], lambda es: any(isinstance(e, OrderPlaced) for e in es))
    [event] = [e for e in events if isinstance(e, OrderPlaced)]
    assert event.buyer_id == ada["buyer"]["id"], "the credential's buyer, never the body's"

    mine = await my_orders(checkout, ada["credential"])
    theirs = await my_orders(checkout, bob["credential"])
    nobody = await my_orders(checkout, None)
    assert mine.status_code == 200, mine.text
    assert [o["id"] for o in mine.json()["orders"]] == [order["id"]]
    assert theirs.json() == {"orders": [], "next_cursor": None}
    assert nobody.status_code == 401

    async with checkout.http() as http:
        as_ada = await http.get(f"/orders/{order['id']}", headers=bearer(ada["credential"]))
        as_bob = await http.get(f"/orders/{order['id']}", headers=bearer(bob["credential"]))
        as_none = await http.get(f"/orders/{order['id']}")
        with_its_token = await http.get(f"/orders/{order['id']}", headers=bearer(order["access_token"]))
        no_such = await http.get(f"/orders/{uuid.uuid4()}", headers=bearer(ada["credential"]))
    assert as_ada.status_code == 200 and as_ada.json()["id"] == order["id"]
    assert (as_bob.status_code, as_bob.json()["error"]) == (404, "order_not_found")
    assert (no_such.status_code, no_such.json()["error"]) == (404, "order_not_found")
    assert as_none.status_code == 401
    assert with_its_token.status_code == 200, "the order's access token keeps working (tracking link)"


async def test_the_tracking_link_seen_with_a_credential_carries_the_orders_own_token_never_the_credential(
    checkout: Checkout,
) -> None:
    ada = await new_buyer(checkout)
    order = (await place_as(checkout, ada["credential"])).json()
    await checkout.keep_worker_away(order["id"])
    await checkout.sql(
        "UPDATE orders SET shipment_id = $2, shipment_status = 'created' WHERE id = $1",
        uuid.UUID(order["id"]),
        uuid.uuid4(),
    )
    async with checkout.http() as http:
        seen = (await http.get(f"/orders/{order['id']}", headers=bearer(ada["credential"]))).json()
    [listed] = (await my_orders(checkout, ada["credential"])).json()["orders"]
    for view in (seen, listed):
        assert view["tracking_url"].endswith(f"?token={order['access_token']}")
        assert ada["credential"] not in view["tracking_url"]


async def test_only_the_owning_buyer_cancels_with_a_credential(checkout: Checkout) -> None:
    ada, bob = await new_buyer(checkout), await new_buyer(checkout)
    order = (await place_as(checkout, ada["credential"])).json()
    async with checkout.http() as http:
        by_bob = await http.post(f"/orders/{order['id']}/cancel", headers=bearer(bob["credential"]))
        by_none = await http.post(f"/orders/{order['id']}/cancel")
        by_ada = await http.post(f"/orders/{order['id']}/cancel", headers=bearer(ada["credential"]))
    assert (by_bob.status_code, by_none.status_code) == (404, 401)
    assert by_ada.status_code == 200, by_ada.text
    assert by_ada.json()["status"] == "cancelled"
    assert ada["credential"] not in str(by_ada.json())


async def test_anonymous_orders_work_as_before_but_may_not_claim_an_account_buyer_id(checkout: Checkout) -> None:
    ada = await new_buyer(checkout)
    anonymous = await place_as(checkout, None, buyer_id="b_browser-made-id")
    assert anonymous.status_code == 202, anonymous.text
    impersonating = await place_as(checkout, None, buyer_id=ada["buyer"]["id"])
    assert (impersonating.status_code, impersonating.json()["error"]) == (422, "account_buyer_id")
    bad_credential = await place_as(checkout, "tsb_revoked-or-made-up")
    assert bad_credential.status_code == 401
    assert (await my_orders(checkout, ada["credential"])).json()["orders"] == []


async def test_my_orders_page_newest_first_with_a_cursor(checkout: Checkout) -> None:
    ada = await new_buyer(checkout)
    placed = [(await place_as(checkout, ada["credential"])).json()["id"] for _ in range(3)]
    first = (await my_orders(checkout, ada["credential"], limit=2)).json()
    assert [o["id"] for o in first["orders"]] == placed[::-1][:2]
    second = (await my_orders(checkout, ada["credential"], limit=2, cursor=first["next_cursor"])).json()
    assert [o["id"] for o in second["orders"]] == placed[:1]
    assert second["next_cursor"] is None
    bad = await my_orders(checkout, ada["credential"], cursor="not-a-cursor")
    assert (bad.status_code, bad.json()["error"]) == (422, "invalid_cursor")


# --- a second device ----------------------------------------------------------------------------------------


async def test_a_code_links_a_second_device_to_the_same_buyer_once(checkout: Checkout) -> None:
    ada = await new_buyer(checkout)
    order = (await place_as(checkout, ada["credential"])).json()
    async with checkout.http() as http:
        assert (await http.post("/buyers/me/link-codes")).status_code == 401
    code = await link_code(checkout, ada["credential"])

    linked = await link(checkout, code.lower().replace("-", " "))  # as a person may type it
    assert linked.status_code == 201, linked.text
    phone = linked.json()
    assert phone["buyer"]["id"] == ada["buyer"]["id"] and phone["buyer"]["devices"] == 2
    assert phone["credential"] != ada["credential"]
    [seen] = (await my_orders(checkout, phone["credential"])).json()["orders"]
    assert seen["id"] == order["id"]

    again = await link(checkout, code)
    assert (again.status_code, again.json()["error"]) == (401, "invalid_link_code"), "a code is used once"


async def test_a_new_code_replaces_the_old_and_an_expired_code_links_nothing(checkout: Checkout) -> None:
    ada = await new_buyer(checkout)
    old = await link_code(checkout, ada["credential"])
    new = await link_code(checkout, ada["credential"])
    assert (await link(checkout, old)).status_code == 401
    await checkout.sql(
        "UPDATE buyer_link_codes SET expires_at = now() - interval '1 second' WHERE buyer_id = $1",
        ada["buyer"]["id"],
    )
    expired = await link(checkout, new)
    assert (expired.status_code, expired.json()["error"]) == (401, "invalid_link_code")
    assert await checkout.sql("SELECT 1 FROM buyer_link_codes WHERE buyer_id = $1", ada["buyer"]["id"]) == []


async def test_wrong_guesses_at_a_code_burn_it(checkout: Checkout) -> None:
    ada = await new_buyer(checkout)
    code = await link_code(checkout, ada["credential"])
    handle, secret = code.split("-")
    wrong = [s for s in ("2222", "3333", "4444", "5555", "6666", "7777") if s != secret][:5]
    answers = [(await link(checkout, f"{handle}-{guess}")).status_code for guess in wrong]
    assert answers == [401] * 5
    burnt = await link(checkout, code)
    assert (burnt.status_code, burnt.json()["error"]) == (401, "invalid_link_code")
    for malformed in ("QRS", "QRST-QRS0", "<script>", "QRST-QRST-QRST"):
        answer = await link(checkout, malformed)
        assert (answer.status_code, answer.json()["error"]) == (422, "invalid_link_code"), malformed
        assert malformed not in answer.text


async def test_signing_out_everywhere_revokes_every_device_but_not_the_orders_own_tokens(
    checkout: Checkout,
) -> None:
    ada = await new_buyer(checkout)
    order = (await place_as(checkout, ada["credential"])).json()
    phone = (await link(checkout, await link_code(checkout, ada["credential"]))).json()
    spare_code = await link_code(checkout, phone["credential"])
    async with checkout.http() as http:
        assert (await http.post("/buyers/me/sign-out-everywhere")).status_code == 401
        out = await http.post("/buyers/me/sign-out-everywhere", headers=bearer(phone["credential"]))
        assert out.status_code == 200, out.text
        assert out.json() == {"revoked": 2}
        for credential in (ada["credential"], phone["credential"]):
            assert (await http.get("/buyers/me", headers=bearer(credential))).status_code == 401
            assert (await http.get(f"/orders/{order['id']}", headers=bearer(credential))).status_code == 401
        assert (await http.get(f"/orders/{order['id']}", headers=bearer(order["access_token"]))).status_code == 200
    assert (await link(checkout, spare_code)).status_code == 401, "the live code went with the credentials"
