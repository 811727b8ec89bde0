"""The buyer's map page in headless Chromium: a real shipment, a courier posting fixes, the marker moving live."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tweetshop_contracts import Destination
from tweetshop_devstack.kafka_probe import publish_events
from tweetshop_devstack.testing import eventually, metric_value, order_paid, run_sync
from tweetshop_platform.auth import hash_secret

if TYPE_CHECKING:
    from playwright.sync_api import Page

OPERATOR_KEY = "browser-test-operator-key"
BUYER_TOKEN = "tso_browser-test-buyer"  # the order's access token, as checkout issues it
# Lyon, Place Bellecour; the courier comes from the north.
LYON = Destination(city="Lyon", country="FR", lat=45.7578, lon=4.8320)
FAR = {"lat": 45.7848, "lon": 4.8320}  # ~3 km north: in transit
NEAR = {"lat": 45.7638, "lon": 4.8320}  # ~670 m north: out for delivery
CLOSER = {"lat": 45.7608, "lon": 4.8320}  # ~330 m north


def metric(api: httpx.Client, name: str) -> float:
    return metric_value(api.get("/metrics").text, name)


def track_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate("() => JSON.parse(JSON.stringify(window.__trackState || {}))")
    return state


# Whether the basemap's land fills a point on screen: the destination pin's tip (Leaflet's default icon is anchored
# at its bottom centre), moved by (dlat, dlon) degrees through Web Mercator at the map's zoom, in the land path's
# own coordinates. Natural Earth's land, not a lookup: a point in the sea must come out false. null: off the map.
LAND_AT = """([dlat, dlon]) => {
    const land = document.querySelector(".leaflet-basemap-pane path.basemap-land");
    const pin = document.querySelector(".leaflet-marker-icon").getBoundingClientRect();
    const { destination, zoom } = window.__trackState;
    const scale = 256 * 2 ** zoom;
    const y = (lat) => Math.log(Math.tan(Math.PI / 4 + (lat * Math.PI) / 360)) / (2 * Math.PI);
    const x = pin.left + pin.width / 2 + (dlon / 360) * scale;
    const at = pin.bottom - (y(destination.lat + dlat) - y(destination.lat)) * scale;
    const map = document.getElementById("map").getBoundingClientRect();
    if (x < map.left || x > map.right || at < map.top || at > map.bottom) return null;
    return land.isPointInFill(new DOMPoint(x, at).matrixTransform(land.getScreenCTM().inverse()));
}"""


@pytest.fixture
def tracking(service_process: Any) -> Any:
    return service_process.start("tracking", env={"TWEETSHOP_OPERATOR_KEY": OPERATOR_KEY})


def test_the_map_page_follows_the_courier_live_on_a_phone_and_reconnects_by_itself(
    tracking: Any, service_process: Any, kafka_bootstrap: str, page: Page
) -> None:
    order_id = uuid.uuid4()
    paid = order_paid(order_id, destination=LYON, amount_minor=1999, buyer_access_sha256=hash_secret(BUYER_TOKEN))
    run_sync(publish_events(kafka_bootstrap, service_process.topic_namespace, paid))

    with httpx.Client(base_url=tracking.base_url, timeout=10) as api:
        buyer = {"Authorization": f"Bearer {BUYER_TOKEN}"}

        def shipments() -> Any:
            answer = api.get("/shipments", params={"order_id": str(order_id)}, headers=buyer)
            return answer.json() if answer.status_code == 200 else None

        [shipment] = eventually(shipments)
        shipment_id = shipment["id"]
        operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        issued = api.post(f"/shipments/{shipment_id}/courier-token", headers=operator)
        courier = {"Authorization": f"Bearer {issued.json()['courier_token']}"}
        # The live feed reads from "latest": it must be reading before the courier posts.
        eventually(lambda: metric(api, "tweetshop_tracking_live_partitions_assigned") > 0)

        requested: list[str] = []
        errors: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.on("pageerror", lambda error: errors.append(str(error)))
        # A request the page's CSP blocked is only a console message: none may be there.
        page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
        # The link checkout gives the buyer: the order's access token rides in the query.
        page.goto(f"{tracking.base_url}/track/{order_id}?token={BUYER_TOKEN}")
        page.wait_for_function("() => window.__trackState && window.__trackState.connection === 'live'")

        before = track_state(page)
        assert before["statusText"] == "Label created"
        assert before["etaText"] == "not known yet"
        assert before["courier"] is None
        assert before["destination"] == {"lat": pytest.approx(LYON.lat), "lon": pytest.approx(LYON.lon)}
        assert page.locator(".leaflet-marker-icon").count() == 1  # the destination pin

        # No tile server is set (as under `make run`): the world is the vendored Natural Earth basemap, not a void.
        page.wait_for_function("() => window.__trackState.basemap === 'ready'")
        assert page.locator(".leaflet-basemap-pane path.basemap-land").count() >= 1
        assert page.locator(".leaflet-basemap-pane path.basemap-border").count() >= 1
        assert page.evaluate(LAND_AT, [0, 0]) is True, "no land drawn under the destination (Lyon)"
        assert "Made with Natural Earth" in page.locator(".leaflet-control-attribution").inner_text()

        def post(point: dict[str, float], seconds_ago: float) -> None:
            fix = {**point, "recorded_at": (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()}
            response = api.post(f"/shipments/{shipment_id}/locations", json=[{**fix, "speed": 9.0}], headers=courier)
            assert response.status_code == 200, response.text

        def courier_at(point: dict[str, float]) -> str:
            return f"""() => {{
                const c = window.__trackState.courier;
                return c !== null && Math.abs(c.lat - {point["lat"]}) < 1e-6 && Math.abs(c.lon - {point["lon"]}) < 1e-6;
            }}"""

        post(FAR, seconds_ago=30)
        page.wait_for_function(courier_at(FAR))
        page.wait_for_function("() => window.__trackState.status === 'in_transit'")
        first = track_state(page)
        assert first["statusText"] == "In transit"
        assert first["etaText"].startswith("around ")
        assert first["etaNote"] == "estimate · 3.0 km to go"

        post(NEAR, seconds_ago=5)
        page.wait_for_function(courier_at(NEAR))
        page.wait_for_function("() => window.__trackState.status === 'out_for_delivery'")
        second = track_state(page)

        # The marker moved south with the courier, and the panel says so.
        assert second["courier"]["lat"] < first["courier"]["lat"]
        assert second["statusText"] == "Out for delivery"
        assert second["etaNote"] == "estimate · 0.7 km to go"
        assert page.locator("#status").inner_text() == "Out for delivery"
        assert "estimate" in page.locator("#eta-note").inner_text()
        assert page.locator("#connection").inner_text() == "Live"
        # The route so far is drawn: one line through both fixes.
        assert second["routePoints"] == 2
        assert page.locator("path.leaflet-interactive").count() >= 2  # the route line and the courier's circle

        # The service restarts (a deploy): the page says it is reconnecting, then follows again by itself.
        tracking.stop()
        page.wait_for_function("() => window.__trackState.connection === 'reconnecting'")
        assert page.locator("#connection").inner_text() == "Reconnecting…"
        tracking.start()
        eventually(lambda: metric(api, "tweetshop_tracking_live_partitions_assigned") > 0)
        page.wait_for_function("() => window.__trackState.connection === 'live'", timeout=30_000)
        post(CLOSER, seconds_ago=1)
        page.wait_for_function(courier_at(CLOSER))
        third = track_state(page)

    assert third["etaNote"] == "estimate · 0.3 km to go"
    assert third["routePoints"] == 3
    # Zoomed out to France (zoom 6): the cities are named; the sea south of Lyon is not land.
    while track_state(page)["zoom"] > 6:
        zoom = track_state(page)["zoom"]
        page.locator(".leaflet-control-zoom-out").click()
        page.wait_for_function(f"() => window.__trackState.zoom < {zoom}")
    assert page.locator(".city-label", has_text="Paris").is_visible()
    assert page.evaluate(LAND_AT, [0, 0]) is True
    assert page.evaluate(LAND_AT, [42.0 - LYON.lat, 5.0 - LYON.lon]) is False, "the Gulf of Lion: sea, on screen"
    # Everything the page needed came from tracking itself (Leaflet included): nothing from the internet.
    assert requested and all(url.startswith(tracking.base_url) for url in requested), requested
    assert errors == []
