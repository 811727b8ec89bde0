"""One-tap Buy in headless Chromium on a phone: a new buyer pays with a card and saves it; the next purchase is
exactly tap Buy → tap Pay → paid, with no card field shown (the address comes from the buyer's account, kept by
checkout, not from this browser's storage; "Change" lists the saved ones); a saved card whose bank asks for 3-D
Secure still asks, and completes. The sheet is the same on a tweet's own page (/t/<tweet_id>), the timeline and
a shop's page (/m/<merchant_id>), and it is a keyboard dialog (Escape closes it, the focus goes back to Buy).

Card numbers go to Stripe only (the local stand-in of Stripe.js here); the web app sends a pm_ id.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tweetshop_devstack.services import DEV_STRIPE_API_KEY
from tweetshop_devstack.testing import eventually

if TYPE_CHECKING:
    from conftest import Shop, StartShop
    from playwright.sync_api import Page, Request

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
    with start_shop("one-tap-buy", {}) as started:
        yield started


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def snap(page: Page, request: pytest.FixtureRequest, step: str) -> None:
    """A screenshot of this step: test-output/screenshots/<test>-<step>.png."""
    safe = re.sub(r"[^\w.-]+", "_", f"{request.node.name}-{step}")
    target = Path(request.config.rootpath) / "test-output" / "screenshots" / f"{safe}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=False)


def open_shop(shop: Shop) -> dict[str, Any]:
    """A merchant, a product and its buyable tweet, through the APIs; the tweet."""
    merchant = httpx.post(f"{shop.catalog}/merchants", json={"handle": f"tap_{uuid.uuid4().hex[:6]}", "name": "Tap"})
    assert merchant.status_code == 201, merchant.text
    key, merchant_id = merchant.json()["api_key"], merchant.json()["id"]
    product = httpx.post(
        f"{shop.catalog}/products",
        json={"merchant_id": merchant_id, "title": "Tap mug", "price_minor": 1500, "currency": "EUR", "stock": 9},
        headers=bearer(key),
    )
    assert product.status_code == 201, product.text

    def post_tweet() -> dict[str, Any] | None:
        body = {"merchant_id": merchant_id, "text": "A mug in one tap", "product_id": product.json()["id"]}
        r = httpx.post(f"{shop.feed}/tweets", json=body, headers=bearer(key))
        return dict(r.json()) if r.status_code == 201 else None

    return eventually(post_tweet, what="feed to know the merchant and the product")


def paid(page: Page) -> None:
    from playwright.sync_api import expect

    page.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
    expect(page.locator("#status-title")).to_have_text("Paid", timeout=SLOW)


def test_a_returning_buyer_pays_with_one_tap_and_a_3d_secure_saved_card_still_asks(
    shop: Shop, page: Page, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    tweet = open_shop(shop)
    sent: list[dict[str, Any]] = []

    def record(req: Request) -> None:
        if req.method == "POST" and req.url.endswith("/api/checkout/orders"):
            sent.append(json.loads(req.post_data or "{}"))

    page.on("request", record)

    # The first purchase, from the tweet's own page: address, card, and "save this card".
    page.goto(f"{shop.webapp}/t/{tweet['id']}")
    buy = page.locator(f'article.tweet[data-tweet-id="{tweet["id"]}"]').get_by_role("button", name="Buy")
    buy.click()
    field = page.locator("#card-element")
    expect(field.get_by_label("Card number")).to_be_visible()
    expect(page.locator("#saved-card")).to_be_hidden()
    for name, value in PARIS.items():
        page.fill(f"#ship-{name}", value)
    field.get_by_label("Card number").fill("4242424242424242")
    field.get_by_label("Expiry month").fill("12")
    field.get_by_label("Expiry year").fill("34")
    field.get_by_label("Security code").fill("123")
    page.get_by_label("Save this card for next time").check()
    snap(page, request, "first-purchase-sheet")
    page.locator("#pay").click()
    paid(page)
    assert sent[-1]["save_card"] is True
    # The address is the buyer's now, kept by checkout: this browser keeps no copy (only the email).
    assert page.evaluate("localStorage.getItem('tweetshop.address')") is None
    assert page.evaluate("JSON.parse(localStorage.getItem('tweetshop.email'))") == PARIS["email"]

    # The next one, from the timeline: tap Buy, the sheet shows the card and the address, tap Pay. No card field.
    page.goto(shop.webapp + "/")
    page.locator(f'article.tweet[data-tweet-id="{tweet["id"]}"]').get_by_role("button", name="Buy").click()
    expect(page.locator("#saved-card-text")).to_have_text("Visa ···· 4242")
    expect(page.locator("#address-text")).to_have_text("Ada Lovelace, 1 Rue de Rivoli, Paris FR")
    expect(page.locator("#card-element")).to_be_hidden()
    expect(page.locator("#address-form")).to_be_hidden()
    snap(page, request, "one-tap-sheet")
    # "Change" lists the buyer's saved addresses, and a new one.
    page.locator("#address-change").click()
    expect(page.get_by_label("Ada Lovelace, 1 Rue de Rivoli, Paris FR")).to_be_checked()
    expect(page.get_by_label("A new address")).to_be_visible()
    page.locator("#address-change").click()
    expect(page.locator("#address-choices")).to_be_hidden()
    # A keyboard dialog: Escape closes it and gives the focus back to Buy.
    page.keyboard.press("Escape")
    expect(page.locator("#sheet")).to_be_hidden()
    again = page.locator(f'article.tweet[data-tweet-id="{tweet["id"]}"]').get_by_role("button", name="Buy")
    again.click()
    expect(page.locator("#saved-card-text")).to_have_text("Visa ···· 4242")
    page.locator("#pay").click()
    paid(page)
    one_tap = sent[-1]
    saved_card = one_tap["payment_method"]
    assert saved_card.startswith("pm_") and saved_card != "pm_card_visa" and "save_card" not in one_tap

    # A saved card whose bank asks for 3-D Secure (saved at Stripe on the same account, as an earlier purchase
    # would have): the sheet offers it one tap away, and the bank still asks.
    customer = httpx.get(f"{shop.stripe}/v1/payment_methods/{saved_card}", auth=(DEV_STRIPE_API_KEY, "")).json()
    card = {"card[number]": "4000002760003184", "card[exp_month]": "12", "card[exp_year]": "2034", "card[cvc]": "123"}
    made = httpx.post(f"{shop.stripe}/v1/payment_methods", data={"type": "card", **card}, auth=(DEV_STRIPE_API_KEY, ""))
    attached = httpx.post(
        f"{shop.stripe}/v1/payment_methods/{made.json()['id']}/attach",
        data={"customer": customer["customer"]},
        auth=(DEV_STRIPE_API_KEY, ""),
    )
    assert attached.status_code == 200, attached.text
    # This time from the shop's own page, reached from the tweet's shop name.
    page.goto(f"{shop.webapp}/t/{tweet['id']}")
    page.locator(f'article.tweet[data-tweet-id="{tweet["id"]}"]').get_by_role("link", name="Tap").click()
    page.wait_for_url(f"{shop.webapp}/m/{tweet['merchant_id']}")
    page.locator(f'article.tweet[data-tweet-id="{tweet["id"]}"]').get_by_role("button", name="Buy").click()
    page.get_by_role("button", name="Change card").click()
    page.get_by_label(re.compile(r"Visa ···· 3184")).check()
    expect(page.locator("#saved-card-text")).to_have_text("Visa ···· 3184")
    expect(page.locator("#card-element")).to_be_hidden()
    page.locator("#pay").click()
    page.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
    expect(page.locator("#status-title")).to_have_text("Confirm with your bank", timeout=SLOW)
    page.get_by_role("button", name="Complete authentication").click()
    expect(page.locator("#status-title")).to_have_text("Paid", timeout=SLOW)
    assert sent[-1]["payment_method"] == made.json()["id"]
