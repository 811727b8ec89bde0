"""No text a buyer or merchant typed ever runs as HTML: not in the web app, not on the tracking map page.

The whole system (catalog, feed, checkout, tracking, the web app, localstripe, the real broker and Postgres) in
headless Chromium on a phone. A merchant opens a shop, lists a product and tweets it, and a buyer buys it, all
through the pages, with markup that would run a script in every free-text field they control:

- merchant: shop name (the handle is [a-z0-9_] only);
- product: title, description, picture URL (http(s) only, but anything after the scheme);
- tweet: text;
- shipping: name, street, city (the country is two letters; the email must look like one and is never shown).

Then every page that shows them (timeline, product sheet, merchant page, order page, my orders, the map page with
its pins' tooltips opened) must show the markup as literal text, run none of it (``window.__xss`` stays unset),
come with a strict Content-Security-Policy, and report no CSP violation (Leaflet and the Stripe stand-in work
under it). The operator key is refused in a URL, directly and through the web app's gateway.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tweetshop_devstack.testing import eventually

if TYPE_CHECKING:
    from conftest import Shop, StartShop
    from playwright.sync_api import Browser, BrowserContext, Page, Response

SLOW = 45_000  # ms: a payment goes through checkout, catalog, Stripe and back over the broker
OPERATOR_KEY = "browser-test-operator-key-no-html"
LYON = {"latitude": 45.7578, "longitude": 4.8320}  # where the buyer's phone says it is
# The phone of conftest.py's page fixture (this test needs a context of its own, that may read the location).
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 1,
    "is_mobile": True,
    "has_touch": True,
}

# Each would run a script if it were ever parsed as HTML (in text, or breaking out of an attribute).
PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>"><svg onload=window.__xss=1>'


def typed(label: str) -> str:
    """What is typed in one field: its label (to tell the fields apart on the page), then the payload."""
    return f"{label} {PAYLOAD}"


SHOP_NAME = typed("Shop")
TITLE = typed("Mug")
DESCRIPTION = typed("Description")
TWEET = typed("Tweet")
SHIP = {"name": typed("Ada"), "line1": typed("1 Rue"), "city": typed("Lyon"), "country": "FR"}

# Collected in every document before its own scripts run: CSP violations the browser reports.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""

# Resolves once the map has not moved for half a second (its pins stay where a pointer finds them).
MAP_AT_REST = """() => new Promise((resolve) => {
  let last = "";
  let since = performance.now();
  const tick = () => {
    const pane = document.querySelector(".leaflet-map-pane");
    const now = pane.style.transform + "|" + document.querySelector(".leaflet-marker-icon").style.transform;
    if (now !== last) { last = now; since = performance.now(); }
    if (performance.now() - since > 500) resolve(true); else requestAnimationFrame(tick);
  };
  tick();
})"""


@pytest.fixture(scope="module")
def stack(start_shop: StartShop) -> Iterator[Shop]:
    """The whole system, as processes of its own (stopped, and its database dropped, at the end)."""
    with start_shop("no-html-from-data", {"TWEETSHOP_OPERATOR_KEY": OPERATOR_KEY}) as started:
        yield started


@dataclass
class Watch:
    """What the browser saw: every document's answer (for its headers), console messages and page errors."""

    documents: list[Response]
    console: list[str]
    errors: list[str]


@pytest.fixture
def phone(browser: Browser, request: pytest.FixtureRequest) -> Iterator[tuple[Page, Watch]]:
    """A phone whose location the pages may read (the buyer's address is placed on the map by it)."""
    context: BrowserContext = browser.new_context(**PHONE, geolocation=LYON, permissions=["geolocation"])
    context.set_default_timeout(15_000)
    context.add_init_script(RECORD_VIOLATIONS)
    watch = Watch([], [], [])
    context.on("response", lambda r: watch.documents.append(r) if r.request.resource_type == "document" else None)
    page = context.new_page()
    page.on("console", lambda message: watch.console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: watch.errors.append(str(error)))
    try:
        yield page, watch
    finally:
        snap(page, request, "last")
        context.close()


def snap(page: Page, request: pytest.FixtureRequest, step: str) -> None:
    """A screenshot of this step: test-output/screenshots/<test>-<step>.png."""
    safe = re.sub(r"[^\w.-]+", "_", f"{request.node.name}-{step}")
    target = Path(request.config.rootpath) / "test-output" / "screenshots" / f"{safe}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(Exception):  # a closed page must not hide the test's own outcome
        page.screenshot(path=str(target), full_page=False)


def nothing_ran(page: Page, where: str) -> None:
    """No payload ran here, no injected element exists, and the browser saw no CSP violation."""
    assert page.evaluate("() => typeof window.__xss") == "undefined", f"a payload ran on {where}"
    injected = page.evaluate(
        """() => [...document.querySelectorAll(
                   'img[src="x"], svg[onload], script:not([src]):not([type="application/json"])'
                 )].map((e) => e.outerHTML)"""
    )
    assert injected == [], f"markup from data became elements on {where}: {injected}"
    assert page.evaluate("() => window.__cspViolations") == [], f"CSP violations on {where}"


def strict_csp(response: Response | None, where: str) -> None:
    """The answer carries a CSP that runs no inline script."""
    assert response is not None, where
    headers = response.all_headers()
    csp = headers.get("content-security-policy", "")
    assert csp, f"no Content-Security-Policy on {where} ({response.url})"
    directives = {part.split()[0]: part.split()[1:] for part in csp.split(";") if part.strip()}
    assert directives["script-src"][0] == "'self'", (where, csp)
    assert "'unsafe-inline'" not in directives["script-src"] and "'unsafe-eval'" not in directives["script-src"]
    assert directives["object-src"] == ["'none'"], (where, csp)
    assert directives["base-uri"] == ["'none'"], (where, csp)
    assert directives["frame-ancestors"] == ["'none'"], (where, csp)
    assert headers.get("x-content-type-options") == "nosniff", where
    assert headers.get("referrer-policy") == "no-referrer", where


def shows(page: Page, selector: str, text: str) -> None:
    """``selector`` shows ``text`` literally: the markup as characters on the screen."""
    from playwright.sync_api import expect

    expect(page.locator(selector).first).to_contain_text(text, timeout=SLOW)


def test_markup_typed_by_merchants_and_buyers_is_shown_as_text_and_never_runs(
    stack: Shop, phone: tuple[Page, Watch], request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    page, watch = phone
    picture = f'{stack.webapp}/static/icon.svg?x="><img src=x onerror=window.__xss=1>'

    # --- the merchant: opens a shop, lists a product, tweets it (all through the merchant page) -------------
    handle = f"xss_{uuid.uuid4().hex[:8]}"
    strict_csp(page.goto(stack.webapp + "/merchant"), "the merchant page")
    page.fill("#reg-handle", handle)
    page.fill("#reg-name", SHOP_NAME)
    page.get_by_role("button", name="Open my shop").click()
    expect(page.locator("#key-value")).to_have_text(re.compile(r"^tsk_"))
    api_key = page.locator("#key-value").inner_text()
    page.get_by_role("button", name="I saved it").click()
    shows(page, "#shop-name", SHOP_NAME)
    shows(page, "#shop-handle", "@" + handle)

    page.fill("#p-title", TITLE)
    page.fill("#p-description", DESCRIPTION)
    page.fill("#p-image", picture)
    page.fill("#p-price", "12.50")
    page.fill("#p-stock", "5")
    page.get_by_role("button", name="Add product").click()
    row = page.locator("article.product-row").first
    expect(row).to_contain_text(TITLE)
    shows(page, "#merchant-notice", f"{TITLE} is on sale")
    row.get_by_role("button", name="Tweet it").click()
    expect(row.get_by_label("Tweet text")).to_have_value(re.compile(re.escape(TITLE)))
    row.get_by_label("Tweet text").fill(TWEET)
    row.get_by_role("button", name="Post tweet").click()
    expect(row.locator(".notice")).to_contain_text("Posted!", timeout=SLOW)
    nothing_ran(page, "the merchant page")
    snap(page, request, "1-merchant")

    merchant = httpx.get(f"{stack.catalog}/merchants/me", headers={"Authorization": f"Bearer {api_key}"}).json()
    product = httpx.get(f"{stack.catalog}/products", params={"merchant_id": merchant["id"]}).json()[0]
    assert (merchant["name"], product["title"], product["description"]) == (SHOP_NAME, TITLE, DESCRIPTION)
    assert product["image_url"] == picture

    # --- the buyer: the timeline, the product sheet, paying -------------------------------------------------
    strict_csp(page.goto(stack.webapp + "/"), "the timeline")
    tweet = page.locator("article.tweet", has_text="Tweet ")
    expect(tweet).to_be_visible(timeout=SLOW)
    expect(tweet.locator(".tweet-text")).to_have_text(TWEET)
    expect(tweet.locator(".who strong")).to_have_text(SHOP_NAME)
    expect(tweet.locator(".product-title")).to_have_text(TITLE)
    expect(tweet.locator("img.product-image")).to_have_attribute("src", picture)
    nothing_ran(page, "the timeline")
    snap(page, request, "2-timeline")

    tweet.get_by_role("button", name="Buy").click()
    expect(page.locator("#sheet-title")).to_have_text(TITLE)
    expect(page.locator("#sheet-merchant")).to_have_text(f"{SHOP_NAME} · @{handle}")
    expect(page.locator("#card-element input")).to_have_count(5)  # Stripe.js (the stand-in) loaded under the CSP
    page.fill("#ship-name", SHIP["name"])
    page.fill("#ship-email", "ada@example.com")
    page.fill("#ship-line1", SHIP["line1"])
    page.fill("#ship-city", SHIP["city"])
    page.fill("#ship-country", SHIP["country"])
    page.locator("#use-location").click()  # no such city on the list: the phone's location places it
    expect(page.locator("#sheet-notice")).to_have_text("Got your location: the courier map will use it.")
    card = page.locator("#card-element")
    card.get_by_label("Card number").fill("4242424242424242")
    card.get_by_label("Expiry month").fill("12")
    card.get_by_label("Expiry year").fill("34")
    card.get_by_label("Security code").fill("123")
    nothing_ran(page, "the product sheet")
    page.locator("#pay").click()

    # --- the order page --------------------------------------------------------------------------------------
    page.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}$"), timeout=SLOW)
    expect(page.locator("#status-title")).to_have_text("Paid", timeout=SLOW)
    track = page.get_by_role("link", name="Track your parcel on the map")
    expect(track).to_be_visible(timeout=SLOW)
    shows(page, "#item-title", TITLE)
    expect(page.locator("#ship-to")).to_have_text(f"{SHIP['name']}, {SHIP['line1']}, {SHIP['city']} FR")
    shows(page, "#status-text", f"Thanks! {SHOP_NAME} is preparing your parcel.")
    nothing_ran(page, "the order page")
    snap(page, request, "3-order")
    order_id = page.url.rstrip("/").split("/")[-1]
    records = page.evaluate("() => JSON.parse(localStorage.getItem('tweetshop.orders'))")
    [record] = [o for o in records if o["id"] == order_id]
    buyer = {"Authorization": f"Bearer {record['access_token']}"}
    order = httpx.get(f"{stack.checkout}/orders/{order_id}", headers=buyer).json()
    assert {k: order["shipping"][k] for k in SHIP} == SHIP, "every payload was stored as typed"
    tracking_url = order["tracking_url"]

    # --- my orders, the saved address in the sheet, the merchant's product row after the sale ----------------
    strict_csp(page.goto(stack.webapp + "/orders"), "my orders")
    mine = page.locator(f'article.order-card[data-order-id="{order_id}"]')
    expect(mine.locator("strong")).to_have_text(TITLE)
    expect(mine.locator(".badge")).to_have_text("Paid", timeout=SLOW)
    nothing_ran(page, "my orders")

    strict_csp(page.goto(stack.webapp + "/"), "the timeline")
    page.locator("article.tweet", has_text="Tweet ").get_by_role("button", name="Buy").click()
    expect(page.locator("#address-text")).to_have_text(f"{SHIP['name']}, {SHIP['line1']}, {SHIP['city']} FR")
    nothing_ran(page, "the product sheet with the saved address")

    strict_csp(page.goto(stack.webapp + "/merchant"), "the merchant page")
    shows(page, "#shop-name", SHOP_NAME)
    expect(page.locator("article.product-row").first).to_contain_text(TITLE)
    expect(page.locator("article.product-row").first).to_contain_text("1 sold", timeout=SLOW)
    nothing_ran(page, "the merchant page after the sale")

    # --- the map page: the destination's pin and the courier's, their tooltips opened -------------------------
    with httpx.Client(base_url=stack.tracking, timeout=10) as tracking:

        def shipments() -> Any:
            # 404 until tracking has read the OrderPaid (its consumer may be fetching at its quiet pace).
            answer = tracking.get("/shipments", params={"order_id": order_id}, headers=buyer)
            if answer.status_code == 404 and answer.json().get("error") == "unknown_shipment":
                return None
            assert answer.status_code == 200, answer.text
            return answer.json()

        [shipment] = eventually(shipments, what="the paid order's shipment")
        operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        courier_token = tracking.post(f"/shipments/{shipment['id']}/courier-token", headers=operator).json()
        courier = {"Authorization": f"Bearer {courier_token['courier_token']}"}

        strict_csp(page.goto(stack.webapp + "/orders"), "my orders")
        mine.get_by_role("link", name="Track").click()
        page.wait_for_url(tracking_url)
        page.wait_for_function("() => window.__trackState && window.__trackState.connection === 'live'", timeout=SLOW)
        fix = {"lat": 45.7620, "lon": 4.8320, "recorded_at": _now_iso(), "speed": 8.0}
        posted = tracking.post(f"/shipments/{shipment['id']}/locations", json=[fix], headers=courier)
        assert posted.status_code == 200, posted.text
        page.wait_for_function("() => window.__trackState.courier !== null", timeout=SLOW)
        page.wait_for_function("() => window.__trackState.status === 'out_for_delivery'", timeout=SLOW)

        expect(page.locator("#destination")).to_have_text(f"{SHIP['city']}, FR")
        # The map re-fits (animated) as the route comes in: pins are pointed at once it holds still.
        page.evaluate(MAP_AT_REST)
        # Every pin's tooltip, opened as a pointer opens it; the destination's by the pointer itself, last.
        tooltips = page.locator(".leaflet-tooltip")
        for pin in page.locator(".leaflet-marker-icon, path.leaflet-interactive").all():
            pin.dispatch_event("mouseover")
        expect(tooltips.filter(has_text="Courier")).to_have_text("Courier")
        page.locator(".leaflet-marker-icon").hover()
        destination = tooltips.filter(has_text=SHIP["city"])
        expect(destination).to_have_text(f"{SHIP['city']}, FR")
        expect(destination).to_be_visible()
        assert destination.locator("*").evaluate_all("(nodes) => nodes.map((n) => n.tagName)") == ["SPAN"]
        snap(page, request, "4-map")
        nothing_ran(page, "the map page")

        # The operator key is refused in a URL: on the map page itself, and through the web app's gateway.
        for url in (
            f"{stack.tracking}/track/{order_id}?token={OPERATOR_KEY}",
            f"{stack.tracking}/shipments/{shipment['id']}/stream?access_token={OPERATOR_KEY}",
            f"{stack.webapp}/api/tracking/shipments/{shipment['id']}?token={OPERATOR_KEY}",
        ):
            refused = httpx.get(url)
            assert refused.status_code == 403, (url, refused.text)
            assert refused.json()["error"] == "operator_key_in_url"
        assert tracking.get(f"/track/{order_id}", headers=operator).status_code == 200

    # Every document the browser loaded (web app pages and the map page) came with a strict CSP.
    assert {r.url.split("?")[0].split("/")[2] for r in watch.documents} >= {
        stack.webapp.split("/")[2],
        stack.tracking.split("/")[2],
    }
    for response in watch.documents:
        strict_csp(response, response.url)
    refused_by_csp = [m for m in watch.console if "Content Security Policy" in m]
    assert refused_by_csp == [], refused_by_csp
    assert watch.errors == []


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()
