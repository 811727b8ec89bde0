"""The map page's background: the vendored Natural Earth basemap by default, a tile server only when one is set.

The tile URL setting is checked before anything uses it (its origin goes into the page's CSP, the template into
the page); the vendored files are served by tracking itself, cached by version, and are what their README says.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from importlib import resources

import httpx
import pytest
from pydantic import ValidationError
from tracking.config import TrackingSettings, check_tile_url
from tracking.main import BASEMAP_ATTRIBUTION, create_app, map_page_csp, page_config, tile_source
from tweetshop_devstack.testing import csp_directives

OPERATOR_KEY = "unit-test-operator-key"
SETTINGS = TrackingSettings(operator_key=OPERATOR_KEY, log_format="console", log_level="WARNING")
STATIC = resources.files("tracking") / "static"
VENDORED = {
    "vendor/natural-earth/countries-50m.json": "natural-earth",
    "vendor/natural-earth/places.json": "natural-earth",
    "vendor/topojson-client/topojson-client.min.js": "topojson-client",
}

HOSTILE_TILE_URLS = [
    "javascript:alert(1)//{z}/{x}/{y}",
    "data:image/png;base64,{z}{x}{y}",
    "//tiles.example/{z}/{x}/{y}.png",  # no scheme: the page's own would be assumed
    "https://tiles.example/tiles.png",  # no {z}/{x}/{y}: one picture for the whole world
    "https://tiles.example/{z}/{x}.png",
    "https://tiles.example/{z}/{x}/{y}.png' 'unsafe-inline",  # a quote: a CSP keyword smuggled in
    'https://tiles.example/{z}/{x}/{y}.png"',
    "https://tiles.example/{z}/{x}/{y}.png; script-src *",  # a new CSP directive
    "https://tiles.example/{z}/{x}/{y}.png, default-src *",  # a second policy
    "https://tiles.example/{z}/{x}/{y}.png https://evil.example",  # a second source
    "https://tiles.example/{z}/{x}/{y}.png\thttps://evil.example",
    "https://tiles.example/{z}/\n{x}/{y}.png",
    "https://tiles.example/{z}/{x}/{y}</script>",
    "https://tiles.example/{z}/{x}/{y}\\",
    "https://user:secret@tiles.example/{z}/{x}/{y}.png",
    "https://*.example/{z}/{x}/{y}.png",
    "https://*/{z}/{x}/{y}.png",
    "https://{z}.example/{z}/{x}/{y}.png",  # a placeholder in the host that CSP cannot express
    "https:///{z}/{x}/{y}.png",
    "https://[::1]/{z}/{x}/{y}.png",
    "https://tiles.example:0/{z}/{x}/{y}.png",
    "https://tiles.example:99999/{z}/{x}/{y}.png",
    "https://tiles.example/{z}/{x}/{y}.png?key={accessToken}",  # a placeholder Leaflet would fill with "undefined"
    "https://tiles.example/" + "a" * 500 + "/{z}/{x}/{y}.png",
    "https://tiles.exämple/{z}/{x}/{y}.png",
]


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(SETTINGS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tracking") as client:
        yield client


@pytest.mark.parametrize(
    ("url", "source"),
    [
        ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "https://tile.openstreetmap.org"),
        ("https://{s}.tile.example/{z}/{x}/{y}{r}.png", "https://*.tile.example"),
        ("https://tiles.example:8443/v1/{z}/{x}/{y}.png?key=pk.abc-123", "https://tiles.example:8443"),
        ("http://localhost:8080/{z}/{x}/{y}.png", "http://localhost:8080"),
        ("  https://tiles.example/{z}/{x}/{y}.png  ", "https://tiles.example"),
    ],
)
def test_a_tile_url_puts_its_own_server_and_nothing_else_into_the_csp(url: str, source: str) -> None:
    settings = SETTINGS.model_copy(update={"map_tile_url": check_tile_url(url)})

    assert tile_source(url) == source
    assert csp_directives(map_page_csp(settings))["img-src"] == ["'self'", "data:", source]


@pytest.mark.parametrize("url", HOSTILE_TILE_URLS)
def test_a_hostile_tile_url_is_refused_at_start_and_never_reaches_the_csp(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="tile URL"):
        check_tile_url(url)
    with pytest.raises(ValidationError, match="tile URL"):
        TrackingSettings(map_tile_url=url)
    # As an operator sets it: the service refuses to start rather than serve the page with it.
    monkeypatch.setenv("TWEETSHOP_MAP_TILE_URL", url)
    with pytest.raises(ValidationError, match="map_tile_url"):
        TrackingSettings()
    # Whatever reaches it anyway (a settings object built without validation) adds no source at all.
    assert tile_source(url) is None
    unchecked = TrackingSettings.model_construct(map_tile_url=url)
    assert csp_directives(map_page_csp(unchecked))["img-src"] == ["'self'", "data:"]


def test_without_a_tile_url_the_page_draws_the_vendored_basemap_and_credits_it() -> None:
    config = json.loads(page_config(SETTINGS, uuid.UUID(int=1)))

    assert config["tileUrl"] == ""
    basemap = config["basemap"]
    assert basemap["attribution"] == BASEMAP_ATTRIBUTION == "Made with Natural Earth"
    for name, path in [("countries", "countries-50m.json"), ("places", "places.json")]:
        url = basemap[name]
        assert re.fullmatch(rf"/static/vendor/natural-earth/{re.escape(path)}\?v=[0-9a-f]{{12}}", url), url
    # Same-origin only: the CSP's connect-src and img-src need nothing for it.
    csp = csp_directives(map_page_csp(SETTINGS))
    assert (csp["connect-src"], csp["img-src"]) == (["'self'"], ["'self'", "data:"])


def test_with_a_tile_url_the_page_uses_the_tiles_and_their_plain_text_attribution() -> None:
    settings = TrackingSettings(
        map_tile_url="https://tiles.example/{z}/{x}/{y}.png", map_tile_attribution="<b>© Tiles & co</b>"
    )
    text = page_config(settings, uuid.UUID(int=1))
    config = json.loads(text)

    assert config["basemap"] is None
    assert config["tileUrl"] == "https://tiles.example/{z}/{x}/{y}.png"
    assert config["tileAttribution"] == "<b>© Tiles & co</b>"  # track.js escapes it: shown as text
    assert "<" not in text
    with pytest.raises(ValidationError):
        TrackingSettings(map_tile_attribution="x" * 301)


async def test_the_basemap_is_served_by_tracking_and_cached_by_version(api: httpx.AsyncClient) -> None:
    basemap = json.loads(page_config(SETTINGS, uuid.UUID(int=1)))["basemap"]

    countries = await api.get(basemap["countries"])
    assert countries.status_code == 200
    assert countries.headers["content-type"] == "application/json"
    assert countries.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert countries.headers["x-content-type-options"] == "nosniff"
    assert "etag" in countries.headers
    topology = countries.json()
    assert topology["type"] == "Topology"
    assert {"land", "countries"} <= set(topology["objects"])

    places = (await api.get(basemap["places"])).json()
    assert len(places["features"]) == 243
    for place in places["features"]:
        lon, lat = place["geometry"]["coordinates"]
        assert place["geometry"]["type"] == "Point"
        assert -180 <= lon <= 180 and -90 <= lat <= 90
        assert isinstance(place["properties"]["name"], str) and place["properties"]["name"].strip()
        assert "?" not in place["properties"]["name"]
    assert {"Paris", "Tokyo", "Chișinău", "Ōsaka"} <= {p["properties"]["name"] for p in places["features"]}

    unversioned = await api.get("/static/vendor/topojson-client/topojson-client.min.js")
    assert unversioned.status_code == 200
    assert unversioned.headers["cache-control"] == "public, max-age=3600"
    assert (await api.get("/static/vendor/natural-earth/absent.json?v=1")).status_code == 404
    assert (await api.get("/static/../config.py")).status_code == 404


async def test_the_map_page_loads_topojson_client_from_tracking(api: httpx.AsyncClient) -> None:
    html = (await api.get(f"/track/{uuid.UUID(int=7)}", headers={"Authorization": f"Bearer {OPERATOR_KEY}"})).text

    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert "/static/vendor/topojson-client/topojson-client.min.js?v=3.1.0" in scripts
    for src in scripts:
        path = src.removeprefix("/static/").split("?")[0]
        assert (await api.get(src)).status_code == 200, path


@pytest.mark.parametrize("path", sorted(VENDORED))
def test_each_vendored_file_is_the_one_its_readme_records(path: str) -> None:
    """A file edited by hand (or upgraded without its README) fails here: the README names its sha256."""
    readme = (STATIC / "vendor" / VENDORED[path] / "README.md").read_text(encoding="utf-8")
    digest = hashlib.sha256((STATIC / path).read_bytes()).hexdigest()

    assert digest in readme, f"{path}: sha256 {digest} is not in its README"
    assert "public domain" in readme.lower() or "ISC" in readme
