"""Buyer accounts in headless Chromium: a second device linked with a code sees the same orders and saved card,
and signing out everywhere ends both sessions. The whole system once for the module (its own shop), two browser
contexts.

The buyer credential lives in the web app's HttpOnly cookie: the pages' scripts never see it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tweetshop_devstack.testing import eventually

if TYPE_CHECKING:
    from conftest import Shop, StartShop
    from playwright.sync_api import Browser, Page

# The harness's phone (conftest.PHONE), for the second device's context.
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 1,
    "is_mobile": True,
    "has_touch": True,
}
SLOW = 45_000  # ms: a payment goes through checkout, catalog, Stripe and back over the broker
PARIS = {
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "line1": "1 Rue de Rivoli",
    "city": "Paris",
    "country": "FR",
}


@pytest.fixture(scope="module")
def shop(start_shop: StartShop) -> Iterator[Shop]:
    with start_shop("buyer-accounts", {}) as started:
        yield started


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def open_shop(shop: Shop) -> dict[str, Any]:
    """A merchant, a product and its buyable tweet, through the APIs; the tweet."""
    merchant = httpx.post(f"{shop.catalog}/merchants", json={"handle": f"acc_{uuid.uuid4().hex[:6]}", "name": "Acc"})
    assert merchant.status_code == 201, merchant.text
    key, merchant_id = merchant.json()["api_key"], merchant.json()["id"]
    product = httpx.post(
        f"{shop.catalog}/products",
        json={"merchant_id": merchant_id, "title": "Linked mug", "price_minor": 1500, "currency": "EUR", "stock": 5},
        headers=bearer(key),
    )
    assert product.status_code == 201, product.text

    def post_tweet() -> dict[str, Any] | None:
        body = {"merchant_id": merchant_id, "text": "A mug for two devices", "product_id": product.json()["id"]}
        r = httpx.post(f"{shop.feed}/tweets", json=body, headers=bearer(key))
        return dict(r.json()) if r.status_code == 201 else None

    return eventually(post_tweet, what="feed to know the merchant and the product")


def buy(page: Page, shop: Shop, tweet: dict[str, Any]) -> str:
    """Buy the tweet's product on the timeline with the test card; the order id."""
    from playwright.sync_api import expect

    page.goto(shop.webapp + "/")
    card = page.locator(f'article.tweet[data-tweet-id="{tweet["id"]}"]')
    card.get_by_role("button", name="Buy").click()
    expect(page.locator("#card-element").get_by_label("Card number")).to_be_visible()
    for field, value in PARIS.items():
        page.fill(f"#ship-{field}", value)
    field = page.locator("#card-element")
    field.get_by_label("Card number").fill("4242424242424242")
    field.get_by_label("Expiry month").fill("12")
    field.get_by_label("Expiry year").fill("34")
    field.get_by_label("Security code").fill("123")
    page.get_by_label("Save this card for next time").check()
    page.locator("#pay").click()
    page.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
    expect(page.locator("#status-title")).to_have_text("Paid", timeout=SLOW)
    return page.url.rstrip("/").split("/")[-1]


def account_status(page: Page) -> int:
    """What checkout answers this browser's cookie, through the gateway (the script never sees the cookie)."""
    return int(page.evaluate("async () => (await fetch('/api/checkout/buyers/me')).status"))


def test_a_second_device_linked_with_a_code_sees_the_same_orders_and_signing_out_everywhere_ends_both(
    shop: Shop, page: Page, browser: Browser
) -> None:
    from playwright.sync_api import expect

    tweet = open_shop(shop)
    order_id = buy(page, shop, tweet)
    assert "tsb_" not in page.evaluate("() => document.cookie"), "the credential is HttpOnly"
    [cookie] = [c for c in page.context.cookies() if c["name"] == "tweetshop_buyer"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

    page.goto(shop.webapp + "/orders")
    expect(page.locator(f'article.order-card[data-order-id="{order_id}"] .badge')).to_have_text("Paid")
    expect(page.locator("#account-status")).to_contain_text("Signed in on 1 device")
    page.get_by_role("button", name="Link another device").click()
    code = page.locator("#link-code")
    expect(code).to_have_text(re.compile(r"^[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}$"))
    typed = code.inner_text()

    phone = browser.new_context(**PHONE)
    try:
        other = phone.new_page()
        other.set_default_timeout(15_000)
        other.goto(shop.webapp + "/orders")
        expect(other.locator("#account-status")).to_contain_text("not signed in")
        expect(other.locator("article.order-card")).to_have_count(0)
        other.fill("#link-code-input", typed.lower())
        other.get_by_role("button", name="Link this device").click()
        mine = other.locator(f'article.order-card[data-order-id="{order_id}"]')
        expect(mine.locator(".badge")).to_have_text("Paid")
        expect(mine).to_contain_text("Qty 1 · €15.00")
        expect(other.locator("#account-status")).to_contain_text("Signed in on 2 devices")
        # The card saved on the first device is this device's too (only brand and last four ever reach a page).
        cards = other.evaluate("async () => (await (await fetch('/api/checkout/buyers/me/cards')).json())")
        assert [(c["brand"], c["last4"]) for c in cards["cards"]] == [("visa", "4242")], cards
        saved = other.locator("#saved-cards li.saved-card")
        expect(saved).to_have_count(1)
        expect(saved).to_contain_text("Visa ···· 4242")
        saved.get_by_role("button", name="Remove Visa ···· 4242").click()
        expect(other.locator("#cards-notice")).to_contain_text("can no longer be charged")
        expect(saved).to_have_count(0)
        expect(other.locator("#cards-empty")).to_be_visible()
        assert page.evaluate("async () => (await (await fetch('/api/checkout/buyers/me/cards')).json())") == {
            "cards": []
        }, "removed for the account, so on the first device too"
        # The order's own page on the other device, read with the account's cookie (it holds no order token).
        other.goto(f"{shop.webapp}/orders/{order_id}")
        expect(other.locator("#status-title")).to_have_text("Paid", timeout=SLOW)

        # A used code links nothing more.
        third = browser.new_context(**PHONE)
        try:
            late = third.new_page()
            late.goto(shop.webapp + "/orders")
            late.fill("#link-code-input", typed)
            late.get_by_role("button", name="Link this device").click()
            expect(late.locator("#account-notice")).to_contain_text("wrong, expired or already used")
            assert account_status(late) == 401
        finally:
            third.close()

        other.goto(shop.webapp + "/orders")
        other.get_by_role("button", name="Sign out everywhere").click()
        expect(other.locator("#account-notice")).to_contain_text("Signed out on every device")
        expect(other.locator(f'article.order-card[data-order-id="{order_id}"]')).to_have_count(0)
        assert account_status(other) == 401
    finally:
        phone.close()

    # The first device is signed out too; the order it placed itself stays readable with its own token.
    assert account_status(page) == 401
    page.goto(shop.webapp + "/orders")
    expect(page.locator("#account-status")).to_contain_text("not signed in")
    expect(page.locator(f'article.order-card[data-order-id="{order_id}"] .badge')).to_have_text("Paid")
