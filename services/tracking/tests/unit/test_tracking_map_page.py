"""The map page runs no text from data as HTML, under a strict CSP; the operator key never rides in a URL.

The app is built as the service builds it, and asked in-process (no lifespan): every request here is decided
before the database is asked (the operator key in a header reads any order without a lookup).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from importlib import resources

import httpx
import pytest
from tracking.config import TrackingSettings
from tracking.main import create_app, map_page_csp, tile_source
from tweetshop_devstack.testing import csp_directives

OPERATOR_KEY = "unit-test-operator-key"
SETTINGS = TrackingSettings(operator_key=OPERATOR_KEY, log_format="console", log_level="WARNING")
ORDER = uuid.UUID(int=7)
SHIPMENT = uuid.UUID(int=8)


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(SETTINGS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tracking") as client:
        yield client


async def test_the_map_page_comes_with_a_strict_content_security_policy(api: httpx.AsyncClient) -> None:
    page = await api.get(f"/track/{ORDER}", headers={"Authorization": f"Bearer {OPERATOR_KEY}"})

    assert page.status_code == 200
    csp = csp_directives(page.headers["content-security-policy"])
    assert csp["script-src"] == ["'self'"], "no inline script, no eval, no other origin"
    assert csp["style-src"] == ["'self'"]
    assert csp["default-src"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert page.headers["x-content-type-options"] == "nosniff"
    # The page's URL carries the buyer's token: it never leaves in a Referer header.
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"


async def test_the_map_page_has_no_inline_script_handler_or_style(api: httpx.AsyncClient) -> None:
    html = (await api.get(f"/track/{ORDER}", headers={"Authorization": f"Bearer {OPERATOR_KEY}"})).text

    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'src="/static/' in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert not re.search(r"\sstyle\s*=", html), "inline style attribute"
    assert "<style" not in html


def test_the_map_script_puts_text_from_data_into_the_page_as_text_only() -> None:
    script = (resources.files("tracking") / "static" / "track.js").read_text(encoding="utf-8")

    assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write", script)
    # Leaflet reads a string tooltip or popup as HTML: each one is given a DOM element built with textContent.
    for call in re.findall(r"\.(?:bindTooltip|bindPopup|setTooltipContent|setPopupContent)\(([^)]*)", script):
        assert call.startswith("textElement("), call


def test_tiles_are_allowed_from_their_own_server_only() -> None:
    assert tile_source("https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png") == "https://*.tile.openstreetmap.org"
    assert tile_source("https://tiles.example:8443/{z}/{x}/{y}.png") == "https://tiles.example:8443"
    assert tile_source("") is None
    assert tile_source("javascript:alert(1)") is None
    with_tiles = SETTINGS.model_copy(update={"map_tile_url": "https://tiles.example/{z}/{x}/{y}.png"})
    assert csp_directives(map_page_csp(with_tiles))["img-src"] == ["'self'", "data:", "https://tiles.example"]
    assert csp_directives(map_page_csp(SETTINGS))["img-src"] == ["'self'", "data:"]


@pytest.mark.parametrize("name", ["token", "access_token"])
@pytest.mark.parametrize(
    "path",
    [
        f"/track/{ORDER}",
        f"/shipments/{SHIPMENT}/stream",
        f"/shipments/{SHIPMENT}/locations",
        f"/shipments/{SHIPMENT}",
        f"/shipments?order_id={ORDER}",
        "/shipments?status=in_transit",
    ],
)
async def test_the_operator_key_in_a_url_is_refused_even_alongside_the_header(
    api: httpx.AsyncClient, path: str, name: str
) -> None:
    url = f"{path}{'&' if '?' in path else '?'}{name}={OPERATOR_KEY}"
    alone = await api.get(url)
    with_header = await api.get(url, headers={"Authorization": f"Bearer {OPERATOR_KEY}"})

    for refused in (alone, with_header):
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "operator_key_in_url"
        assert "Authorization: Bearer" in refused.json()["message"]
        assert OPERATOR_KEY not in refused.text


async def test_operators_open_the_map_page_with_the_header(api: httpx.AsyncClient) -> None:
    page = await api.get(f"/track/{ORDER}", headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
    assert page.status_code == 200
    assert str(ORDER) in page.text
