"""Saved addresses against the real broker, Postgres and localstripe: the buyer's own (401 without a credential,
404 for another buyer's), one default, the same validation as an order's shipping address, a cap per buyer, and
gone with the account.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from conftest import Checkout

HOME = {
    "name": "Ada Lovelace",
    "line1": "12 rue de Rivoli",
    "city": "Paris",
    "country": "fr",
    "lat": 48.8566,
    "lon": 2.3522,
}
WORK = {"name": "Ada Lovelace", "line1": "1 Pall Mall", "city": "London", "country": "GB", "lat": 51.5, "lon": -0.13}


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def new_buyer(checkout: Checkout) -> str:
    async with checkout.http() as http:
        response = await http.post("/buyers")
    assert response.status_code == 201, response.text
    return str(response.json()["credential"])


async def listed(checkout: Checkout, credential: str | None) -> httpx.Response:
    async with checkout.http() as http:
        return await http.get("/buyers/me/addresses", headers=bearer(credential))


async def save(checkout: Checkout, credential: str | None, body: dict[str, Any]) -> httpx.Response:
    async with checkout.http() as http:
        return await http.post("/buyers/me/addresses", json=body, headers=bearer(credential))


async def default_of(checkout: Checkout, credential: str | None, address_id: str) -> httpx.Response:
    async with checkout.http() as http:
        return await http.put(f"/buyers/me/addresses/{address_id}/default", headers=bearer(credential))


async def remove(checkout: Checkout, credential: str | None, address_id: str) -> httpx.Response:
    async with checkout.http() as http:
        return await http.delete(f"/buyers/me/addresses/{address_id}", headers=bearer(credential))


def lines(response: httpx.Response) -> list[tuple[str, bool]]:
    assert response.status_code == 200, response.text
    return [(a["line1"], a["is_default"]) for a in response.json()["addresses"]]


async def test_addresses_are_saved_listed_defaulted_and_removed_by_their_buyer_only(checkout: Checkout) -> None:
    ada, eve = await new_buyer(checkout), await new_buyer(checkout)
    assert (await listed(checkout, ada)).json() == {"addresses": []}

    home = await save(checkout, ada, HOME)
    assert home.status_code == 201, home.text
    saved = home.json()
    assert saved["country"] == "FR" and saved["is_default"] is True, "the first address is the default"
    work = await save(checkout, ada, WORK)
    assert work.status_code == 201 and work.json()["is_default"] is False, work.text
    assert lines(await listed(checkout, ada)) == [("12 rue de Rivoli", True), ("1 Pall Mall", False)]
    home_id, work_id = saved["id"], work.json()["id"]

    # No credential, an unknown one: 401 on every route; another buyer: sees none, touches none (404).
    for credential in (None, "tsb_" + "x" * 43):
        assert (await listed(checkout, credential)).status_code == 401
        assert (await save(checkout, credential, HOME)).status_code == 401
        assert (await default_of(checkout, credential, work_id)).status_code == 401
        assert (await remove(checkout, credential, home_id)).status_code == 401
    assert (await listed(checkout, eve)).json() == {"addresses": []}
    for refused in (await default_of(checkout, eve, work_id), await remove(checkout, eve, home_id)):
        assert refused.status_code == 404 and refused.json()["error"] == "address_not_found", refused.text
    assert (await remove(checkout, ada, str(uuid.uuid4()))).status_code == 404
    assert (await remove(checkout, ada, "not-an-id")).status_code == 422
    assert lines(await listed(checkout, ada)) == [("12 rue de Rivoli", True), ("1 Pall Mall", False)]

    # The default moves; removing the default makes the remaining one the default.
    assert lines(await default_of(checkout, ada, work_id)) == [("1 Pall Mall", True), ("12 rue de Rivoli", False)]
    removed = await remove(checkout, ada, work_id)
    assert removed.status_code == 204, removed.text
    assert lines(await listed(checkout, ada)) == [("12 rue de Rivoli", True)]
    assert (await remove(checkout, ada, work_id)).status_code == 404
    # Saving one as the default takes it from the other.
    assert (await save(checkout, ada, {**WORK, "default": True})).json()["is_default"] is True
    assert lines(await listed(checkout, ada)) == [("1 Pall Mall", True), ("12 rue de Rivoli", False)]


async def test_an_address_is_validated_like_an_orders_shipping_address(checkout: Checkout) -> None:
    ada = await new_buyer(checkout)
    hostile: list[dict[str, Any]] = [
        {**HOME, "lat": 91},
        {**HOME, "lon": -180.5},
        {**HOME, "country": "FRA"},
        {**HOME, "name": ""},
        {**HOME, "line1": "x" * 201},
        {**HOME, "default": "yes"},
        {**HOME, "buyer_id": "ba_" + "0" * 32},
        {k: v for k, v in HOME.items() if k != "city"},
    ]
    for body in hostile:
        refused = await save(checkout, ada, body)
        assert refused.status_code == 422, (body, refused.text)
    async with checkout.http() as http:
        nan = await http.post(
            "/buyers/me/addresses",
            content=b'{"name":"a","line1":"b","city":"c","country":"FR","lat":NaN,"lon":0}',
            headers={**bearer(ada), "Content-Type": "application/json"},
        )
    assert nan.status_code == 422, nan.text
    assert (await listed(checkout, ada)).json() == {"addresses": []}


async def test_a_buyer_keeps_a_few_addresses_and_they_go_with_the_account(checkout: Checkout) -> None:
    from checkout.usecases.addresses import MAX_ADDRESSES

    ada = await new_buyer(checkout)
    async with checkout.http() as http:
        ada_id = (await http.get("/buyers/me", headers=bearer(ada))).json()["id"]
    for n in range(MAX_ADDRESSES):
        assert (await save(checkout, ada, {**HOME, "line1": f"{n} rue de Rivoli"})).status_code == 201
    over = await save(checkout, ada, WORK)
    assert over.status_code == 409 and over.json()["error"] == "too_many_addresses", over.text
    assert len((await listed(checkout, ada)).json()["addresses"]) == MAX_ADDRESSES

    async with checkout.http() as http:
        deleted = await http.delete("/buyers/me", headers=bearer(ada))
    assert deleted.status_code == 200, deleted.text
    assert await checkout.sql("SELECT id FROM buyer_addresses WHERE buyer_id = $1", ada_id) == []
    assert (await listed(checkout, ada)).status_code == 401
