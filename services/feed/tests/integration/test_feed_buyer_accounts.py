"""Follows belong to the buyer account, across the real processes: checkout issues the credential, feed learns
its hash from checkout.buyers.v1, the web app turns its cookie into the bearer; real broker and Postgres.

The right buyer follows through the web app at once (a credential issued moments ago is "not yet known", 503 with
Retry-After, never 401); no credential gets 401, another buyer 404; deleting the account at checkout erases the
buyer's follows in feed and its credential stops working there too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from tweetshop_devstack.testing import eventually_async as eventually
from tweetshop_devstack.testing import fetch

PAGE = {"X-Requested-With": "tweetshop"}  # what the web app's own pages send (CSRF)
MAX_RETRIES = 10


async def following_retry_after(send: Any) -> httpx.Response:
    """What a client does: send again after Retry-After while the answer is a 503 with one."""
    for _ in range(MAX_RETRIES):
        response: httpx.Response = await send()
        if response.status_code != 503 or "retry-after" not in response.headers:
            return response
        await asyncio.sleep(int(response.headers["retry-after"]))
    return response


async def sign_in(browser: httpx.AsyncClient) -> str:
    """A new buyer in this browser (the credential in the HttpOnly cookie); the buyer's id."""
    session = await browser.post("/account/session")
    assert session.status_code == 201, session.text
    assert "tweetshop_buyer" in browser.cookies
    return str(session.json()["buyer"]["id"])


async def test_follows_need_the_buyers_own_credential_and_go_with_the_account(service_process: Any) -> None:
    # The web app is ready once every API it fronts answers: tracking too, although this test never calls it.
    catalog, feed, _checkout, _tracking, webapp = service_process.start_many(
        ["catalog", "feed", "checkout", "tracking", "webapp"]
    )
    created = httpx.post(f"{catalog.base_url}/merchants", json={"handle": "followed", "name": "Followed"})
    assert created.status_code == 201, created.text
    merchant_id = created.json()["id"]

    async with (
        httpx.AsyncClient(base_url=webapp.base_url, headers=PAGE, timeout=10) as ada,
        httpx.AsyncClient(base_url=webapp.base_url, headers=PAGE, timeout=10) as bob,
        httpx.AsyncClient(base_url=feed.base_url, timeout=10) as anyone,
    ):
        ada_id = await sign_in(ada)
        await sign_in(bob)
        # The right buyer, at once: the credential and the merchant may both be newer than feed's copies.
        followed = await following_retry_after(lambda: ada.post("/api/feed/follows", json={"merchant_id": merchant_id}))
        assert followed.status_code == 201, followed.text
        assert followed.json()["buyer_id"] == ada_id
        listed = await ada.get("/api/feed/follows")
        assert [f["merchant"]["id"] for f in listed.json()["following"]] == [merchant_id]
        timeline = await ada.get("/api/feed/timeline", params={"buyer_id": ada_id})
        assert timeline.status_code == 200, timeline.text

        # None: 401. Another buyer: 404 (after its own credential is known to feed).
        assert (await anyone.get("/follows", params={"buyer_id": ada_id})).status_code == 401
        assert (await anyone.get("/timeline", params={"buyer_id": ada_id})).status_code == 401
        bobs = await following_retry_after(lambda: bob.get("/api/feed/follows", params={"buyer_id": ada_id}))
        assert bobs.status_code == 404, bobs.text
        bobs_delete = await bob.delete("/api/feed/follows", params={"buyer_id": ada_id, "merchant_id": merchant_id})
        assert bobs_delete.status_code == 404
        # A write with the cookie but not from the web app's pages: refused before it reaches feed.
        forged = await ada.post(
            "/api/feed/follows", json={"merchant_id": merchant_id}, headers={"X-Requested-With": ""}
        )
        assert forged.status_code == 403

        # The account deleted at checkout: feed forgets the buyer's follows, and its credential.
        deleted = await ada.delete("/api/checkout/buyers/me")
        assert deleted.status_code == 200, deleted.text
        assert "tweetshop_buyer" not in ada.cookies, "the web app forgets the cookie of a deleted account"
        assert feed.database_url is not None

        async def erased() -> bool:
            rows = await fetch(feed.database_url, "SELECT count(*) FROM follows WHERE buyer_id = $1", ada_id)
            return bool(rows[0][0] == 0)

        await eventually(erased, what="feed to erase the deleted buyer's follows")
        assert (await bob.get("/api/feed/follows", params={"buyer_id": ada_id})).status_code == 404
