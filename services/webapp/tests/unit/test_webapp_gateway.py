"""The web app's gateway and pages, with the four services replaced by an in-memory transport."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from webapp import gateway
from webapp.config import WebappSettings
from webapp.main import create_app

if TYPE_CHECKING:
    from conftest import OpenWebapp

Handler = Callable[[httpx.Request], Any]


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    """A service's JSON answer, streamed as one from the network is (not read in advance)."""

    async def chunks() -> AsyncIterator[bytes]:
        if body is not None:
            yield json.dumps(body).encode()

    sent = {"content-type": "application/json", **(headers or {})}
    return httpx.Response(status, headers=sent, content=chunks())


def recorder(
    status: int, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[list[httpx.Request], Handler]:
    """A stand-in for the services that answers the same each time and keeps what it was sent."""
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        seen.append(request)
        return answer(status, body, headers)

    return seen, handler


def healthy(request: httpx.Request) -> httpx.Response:
    return answer(200, {"status": "ok"})


# --- routing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "path", "upstream_path"),
    [
        ("feed", "timeline", "/timeline"),
        ("feed", "follows", "/follows"),
        ("catalog", "products/8c5e/anything", "/products/8c5e/anything"),
        ("checkout", "orders/abc", "/orders/abc"),
        ("tracking", "shipments/s1/stream", "/shipments/s1/stream"),
        ("catalog", "merchants/a b", "/merchants/a%20b"),
    ],
)
def test_public_resources_of_the_four_services_are_routed(
    service: str, path: str, upstream_path: str, webapp_settings: WebappSettings
) -> None:
    target = gateway.route(webapp_settings.upstreams, service, path)
    assert target.base_url == webapp_settings.upstreams[service]
    assert target.path == upstream_path


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("stripe", "v1/charges"),
        ("catalog", "metrics"),
        ("checkout", "webhooks/stripe"),
        ("tracking", "track/123"),
        ("catalog", "products/../metrics"),
        ("feed", "timeline/./x"),
        ("feed", "tweets//x"),
        ("feed", ""),
    ],
)
def test_anything_else_is_refused(service: str, path: str, webapp_settings: WebappSettings) -> None:
    with pytest.raises(gateway.RouteRefused):
        gateway.route(webapp_settings.upstreams, service, path)


# --- passing requests through ------------------------------------------------------------------------


async def test_a_request_reaches_its_service_with_what_the_api_needs_and_nothing_else(webapp: OpenWebapp) -> None:
    seen, handler = recorder(200, {"id": "o1", "status": "pending"}, {"Idempotent-Replayed": "true"})
    async with webapp(handler) as client:
        response = await client.post(
            "/api/checkout/orders?x=1",
            json={"quantity": 1},
            headers={
                "Authorization": "Bearer tok",
                "Idempotency-Key": "k" * 20,
                "Cookie": "session=secret",
                "X-Correlation-Id": "corr-from-page",
            },
        )

    assert response.status_code == 200
    assert response.json() == {"id": "o1", "status": "pending"}
    assert response.headers["idempotent-replayed"] == "true"
    [sent] = seen
    assert (sent.method, str(sent.url)) == ("POST", "http://checkout.test/orders?x=1")
    assert sent.headers["authorization"] == "Bearer tok"
    assert sent.headers["idempotency-key"] == "k" * 20
    assert sent.headers["x-correlation-id"] == "corr-from-page"
    assert "cookie" not in sent.headers
    assert sent.content == b'{"quantity":1}'


async def test_errors_of_a_service_reach_the_page_unchanged(webapp: OpenWebapp) -> None:
    body = {"error": "insufficient_stock", "message": "'Mug' is sold out"}
    _, handler = recorder(409, body)
    async with webapp(handler) as client:
        response = await client.post("/api/checkout/orders", json={})
    assert (response.status_code, response.json()) == (409, body)


async def test_a_service_that_does_not_answer_is_a_clear_502_or_504(webapp: OpenWebapp) -> None:
    async def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=request)

    async with webapp(refused) as client:
        down = await client.get("/api/feed/timeline")
    async with webapp(slow) as client:
        late = await client.get("/api/feed/timeline")

    assert (down.status_code, down.json()["error"]) == (502, "upstream_unavailable")
    assert "feed" in down.json()["message"]
    assert (late.status_code, late.json()["error"]) == (504, "upstream_timeout")


async def test_unknown_apis_and_private_paths_are_404_without_calling_anyone(webapp: OpenWebapp) -> None:
    seen, handler = recorder(200)
    async with webapp(handler) as client:
        answers = [
            await client.get("/api/catalog/metrics"),
            await client.post("/api/checkout/webhooks/stripe", content=b"{}"),
            await client.get("/api/nowhere/x"),
        ]
    assert [(a.status_code, a.json()["error"]) for a in answers] == [(404, "not_found")] * 3
    assert seen == []


async def test_server_sent_events_are_passed_on_as_they_come_not_when_the_stream_ends(
    webapp_settings: WebappSettings,
) -> None:
    second_may_go = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        yield b"event: snapshot\ndata: {}\n\n"
        await second_may_go.wait()
        yield b"event: location\ndata: {}\n\n"

    async def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/shipments/s1/stream"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=events())

    # A real server: the in-process ASGI transport would wait for the whole answer.
    app = create_app(webapp_settings, transport=httpx.MockTransport(handler))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with (
            httpx.AsyncClient(timeout=5) as client,
            client.stream("GET", f"http://127.0.0.1:{port}/api/tracking/shipments/s1/stream") as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            chunks = stream.aiter_text()
            first = await asyncio.wait_for(anext(chunks), timeout=5)
            assert "event: snapshot" in first
            second_may_go.set()
            rest = "".join([chunk async for chunk in chunks])
            assert "event: location" in rest
    finally:
        server.should_exit = True
        await serving


# --- health, pages, configuration --------------------------------------------------------------------


async def test_ready_only_when_the_four_services_answer(webapp: OpenWebapp) -> None:
    async def feed_down(request: httpx.Request) -> httpx.Response:
        if request.url.host == "feed.test":
            raise httpx.ConnectError("refused", request=request)
        return answer(200, {"status": "ok"})

    async with webapp(healthy) as client:
        ready = await client.get("/readyz")
        alive = await client.get("/healthz")
    async with webapp(feed_down) as client:
        unready = await client.get("/readyz")

    assert ready.status_code == 200
    assert ready.json()["checks"] == {"catalog": "ok", "feed": "ok", "checkout": "ok", "tracking": "ok"}
    assert alive.status_code == 200
    assert unready.status_code == 503
    assert unready.json()["checks"]["feed"].startswith("unavailable")
    assert unready.json()["checks"]["catalog"] == "ok"


@pytest.mark.parametrize("path", ["/", "/orders", "/orders/0f8e4c2a-2d1e-4c57-9d0c-7d3f0b8a1e55", "/merchant"])
async def test_pages_are_html_that_may_only_load_scripts_from_here_and_stripe(path: str, webapp: OpenWebapp) -> None:
    async with webapp(healthy) as client:
        response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/js/' in response.text
    csp = response.headers["content-security-policy"]
    assert "script-src 'self' http://127.0.0.1:8420;" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_scripts_and_styles_are_served(webapp: OpenWebapp) -> None:
    async with webapp(healthy) as client:
        for path in ("/static/js/buy.js", "/static/js/stripe-pay.js", "/static/app.css", "/static/icon.svg"):
            response = await client.get(path)
            assert response.status_code == 200, path
        assert (await client.get("/static/nothing.js")).status_code == 404


async def test_pages_use_the_local_stripe_stand_in_or_real_stripe_as_configured(
    webapp: OpenWebapp, real_stripe: WebappSettings
) -> None:
    async with webapp(healthy) as client:
        local = (await client.get("/config.json")).json()["stripe"]
    async with webapp(healthy, real_stripe) as client:
        real = (await client.get("/config.json")).json()["stripe"]
        csp = (await client.get("/")).headers["content-security-policy"]

    assert local == {
        "mode": "stand-in",
        "js_url": "http://127.0.0.1:8420/js.stripe.com/v3/",
        "publishable_key": "pk_test_tweetshop_dev",
        "api_url": "http://127.0.0.1:8420",
    }
    assert real == {
        "mode": "stripe",
        "js_url": "https://js.stripe.com/v3/",
        "publishable_key": "pk_live_abc",
        "api_url": None,
    }
    assert "script-src 'self' https://js.stripe.com" in csp


def test_settings_refuse_what_is_not_a_url_or_a_publishable_key() -> None:
    with pytest.raises(ValueError, match="http"):
        WebappSettings(feed_url="feed:8002")
    with pytest.raises(ValueError):
        WebappSettings(stripe_publishable_key="sk_test_secret")
    assert WebappSettings(catalog_url="http://catalog:8001/").catalog_url == "http://catalog:8001"
