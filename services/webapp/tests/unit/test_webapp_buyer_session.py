"""The buyer's session cookie: made by the web app, never shown to scripts, turned into a bearer for the buyer's
own checkout calls only, and unusable from another site (CSRF). Services answered by an in-memory transport."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from webapp import gateway

if TYPE_CHECKING:
    from conftest import OpenWebapp

CREDENTIAL = "tsb_" + "c" * 43
BUYER = {"id": "ba_" + "0" * 32, "created_at": "2026-12-02T12:00:00Z", "devices": 1}
PAGE = {"X-Requested-With": "tweetshop"}
COOKIE = {"Cookie": f"tweetshop_buyer={CREDENTIAL}"}


def reply(status: int, body: Any) -> httpx.Response:
    """A JSON answer streamed as one from the network is (the gateway relays it chunk by chunk)."""

    async def chunks() -> Any:
        yield json.dumps(body).encode()

    return httpx.Response(status, headers={"content-type": "application/json"}, content=chunks())


def checkout_stand_in(seen: list[httpx.Request], *, me_status: int = 200) -> Any:
    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        seen.append(request)
        path = request.url.path
        if (request.method, path) == ("POST", "/buyers"):
            return reply(201, {"buyer": BUYER, "credential": CREDENTIAL})
        if (request.method, path) == ("POST", "/buyers/link"):
            if json.loads(request.content)["code"] != "K7QM-3XWD":
                return reply(401, {"error": "invalid_link_code", "message": "wrong"})
            return reply(201, {"buyer": {**BUYER, "devices": 2}, "credential": "tsb_" + "d" * 43})
        if path == "/buyers/me" and me_status != 200:
            return reply(me_status, {"error": "invalid_buyer_credential", "message": "revoked"})
        if path == "/buyers/me":
            return reply(200, BUYER)
        return reply(me_status, {"orders": [], "next_cursor": None})

    return handler


async def test_a_new_session_keeps_the_credential_in_an_httponly_secure_lax_cookie_never_in_the_body(
    webapp: OpenWebapp,
) -> None:
    seen: list[httpx.Request] = []
    async with webapp(checkout_stand_in(seen)) as client:
        response = await client.post("/account/session", headers=PAGE)
    assert response.status_code == 201, response.text
    assert response.json() == {"buyer": BUYER}
    assert CREDENTIAL not in response.text
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"tweetshop_buyer={CREDENTIAL};")
    for attribute in ("HttpOnly", "Secure", "SameSite=lax", "Path=/"):
        assert attribute.lower() in cookie.lower(), attribute
    assert [(r.method, r.url.path) for r in seen] == [("POST", "/buyers")]


async def test_on_http_localhost_the_cookie_is_not_secure_so_that_make_run_works(webapp: OpenWebapp) -> None:
    seen: list[httpx.Request] = []
    async with webapp(checkout_stand_in(seen)) as client:
        response = await client.post("http://127.0.0.1:8000/account/session", headers=PAGE)
        remote = await client.post("http://shop.example/account/session", headers=PAGE)
    assert "secure" not in response.headers["set-cookie"].lower()
    assert "secure" in remote.headers["set-cookie"].lower()


async def test_a_live_cookie_is_kept_and_a_revoked_one_is_replaced(webapp: OpenWebapp) -> None:
    seen: list[httpx.Request] = []
    async with webapp(checkout_stand_in(seen)) as client:
        kept = await client.post("/account/session", headers={**PAGE, **COOKIE})
    assert (kept.status_code, kept.json()) == (200, {"buyer": BUYER})
    assert "set-cookie" not in kept.headers
    assert seen[0].headers["authorization"] == f"Bearer {CREDENTIAL}"

    seen.clear()
    async with webapp(checkout_stand_in(seen, me_status=401)) as client:
        replaced = await client.post("/account/session", headers={**PAGE, **COOKIE})
    assert replaced.status_code == 201
    assert [(r.method, r.url.path) for r in seen] == [("GET", "/buyers/me"), ("POST", "/buyers")]


async def test_linking_sets_the_other_devices_buyer_and_a_wrong_code_changes_nothing(webapp: OpenWebapp) -> None:
    seen: list[httpx.Request] = []
    async with webapp(checkout_stand_in(seen)) as client:
        linked = await client.post("/account/link", json={"code": "K7QM-3XWD"}, headers=PAGE)
        wrong = await client.post("/account/link", json={"code": "AAAA-AAAA"}, headers={**PAGE, **COOKIE})
    assert linked.status_code == 201 and linked.json()["buyer"]["devices"] == 2
    assert linked.headers["set-cookie"].startswith("tweetshop_buyer=tsb_ddd")
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_link_code")
    assert "set-cookie" not in wrong.headers


async def test_signing_out_everywhere_forgets_the_cookie(webapp: OpenWebapp) -> None:
    seen: list[httpx.Request] = []
    async with webapp(checkout_stand_in(seen)) as client:
        out = await client.post("/account/sign-out-everywhere", headers={**PAGE, **COOKIE})
        signed_out = await client.post("/account/sign-out-everywhere", headers=PAGE)
    assert out.status_code == 200
    assert 'tweetshop_buyer=""' in out.headers["set-cookie"] and "max-age=0" in out.headers["set-cookie"].lower()
    assert seen[-1].url.path == "/buyers/me/sign-out-everywhere"
    assert seen[-1].headers["authorization"] == f"Bearer {CREDENTIAL}"
    assert signed_out.status_code == 401


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/account/session", {}),
        ("/account/session", {"X-Requested-With": "XMLHttpRequest"}),
        ("/account/session", {**PAGE, "Origin": "https://evil.example"}),
        ("/account/link", {"Origin": "http://webapp"}),
        ("/account/sign-out-everywhere", COOKIE),
    ],
)
async def test_the_account_routes_refuse_requests_not_from_the_web_apps_pages(
    webapp: OpenWebapp, path: str, headers: dict[str, str]
) -> None:
    seen: list[httpx.Request] = []
    async with webapp(checkout_stand_in(seen)) as client:
        response = await client.post(path, json={"code": "K7QM-3XWD"}, headers=headers)
    assert (response.status_code, response.json()["error"]) == (403, "csrf_refused")
    assert seen == []


async def test_the_cookie_is_the_bearer_of_the_buyers_own_calls_only(webapp: OpenWebapp) -> None:
    seen: list[httpx.Request] = []
    async with webapp(checkout_stand_in(seen)) as client:
        await client.get("/api/checkout/buyers/me/orders?limit=5", headers=COOKIE)
        await client.get("/api/checkout/orders/o1", headers=COOKIE)
        await client.get("/api/checkout/orders/o1", headers={**COOKIE, "Authorization": "Bearer tso_own"})
        await client.get("/api/feed/timeline", headers=COOKIE)  # the buyer's followed timeline (feed, issue 17)
        await client.post("/api/feed/follows", json={}, headers={**COOKIE, **PAGE})
        await client.get("/api/feed/tweets/t1", headers=COOKIE)  # not the buyer's: no bearer
        await client.post("/api/checkout/orders", json={}, headers={**COOKIE, **PAGE, "Origin": "http://webapp"})
    sent = [(r.url.host, r.url.path, r.headers.get("authorization")) for r in seen]
    assert sent == [
        ("checkout.test", "/buyers/me/orders", f"Bearer {CREDENTIAL}"),
        ("checkout.test", "/orders/o1", f"Bearer {CREDENTIAL}"),
        ("checkout.test", "/orders/o1", "Bearer tso_own"),
        ("feed.test", "/timeline", f"Bearer {CREDENTIAL}"),
        ("feed.test", "/follows", f"Bearer {CREDENTIAL}"),
        ("feed.test", "/tweets/t1", None),
        ("checkout.test", "/orders", f"Bearer {CREDENTIAL}"),
    ]
    assert all("cookie" not in r.headers for r in seen)


async def test_a_write_with_the_cookie_from_another_site_never_reaches_checkout(webapp: OpenWebapp) -> None:
    seen: list[httpx.Request] = []
    async with webapp(checkout_stand_in(seen)) as client:
        no_header = await client.post("/api/checkout/orders/o1/cancel", headers=COOKIE)
        other_site = await client.post(
            "/api/checkout/buyers/me/link-codes", headers={**COOKIE, **PAGE, "Origin": "https://evil.example"}
        )
        without_cookie = await client.post("/api/checkout/orders/o1/cancel", headers={"Authorization": "Bearer t"})
    assert (no_header.status_code, no_header.json()["error"]) == (403, "csrf_refused")
    assert (other_site.status_code, other_site.json()["error"]) == (403, "csrf_refused")
    assert [r.headers["authorization"] for r in seen] == ["Bearer t"], "an own credential needs no CSRF proof"
    assert without_cookie.status_code == 200


async def test_a_revoked_cookie_is_dropped_when_checkout_refuses_it(webapp: OpenWebapp) -> None:
    seen: list[httpx.Request] = []
    async with webapp(checkout_stand_in(seen, me_status=401)) as client:
        response = await client.get("/api/checkout/buyers/me/orders", headers=COOKIE)
    assert response.status_code == 401
    assert 'tweetshop_buyer=""' in response.headers["set-cookie"]


async def test_only_checkout_refusing_the_cookie_drops_it_and_a_deleted_account_drops_it_too(
    webapp: OpenWebapp,
) -> None:
    seen: list[httpx.Request] = []
    async with webapp(checkout_stand_in(seen, me_status=401)) as client:
        # feed learns credentials a moment after checkout: its 401 is not the last word on the cookie.
        from_feed = await client.get("/api/feed/follows", headers=COOKIE)
    assert from_feed.status_code == 401 and "set-cookie" not in from_feed.headers
    async with webapp(checkout_stand_in(seen)) as client:
        deleted = await client.delete("/api/checkout/buyers/me", headers={**COOKIE, **PAGE})
    assert deleted.status_code == 200
    assert 'tweetshop_buyer=""' in deleted.headers["set-cookie"]


@pytest.mark.parametrize("path", ["buyers", "buyers/link"])
def test_the_routes_that_answer_a_credential_are_not_passed_through(path: str, webapp_settings: Any) -> None:
    with pytest.raises(gateway.RouteRefused):
        gateway.route(webapp_settings.upstreams, "checkout", path)
    assert gateway.route(webapp_settings.upstreams, "checkout", "buyers/me/orders").path == "/buyers/me/orders"
