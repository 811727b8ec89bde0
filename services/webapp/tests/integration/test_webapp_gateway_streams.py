"""The real web app in front of a real (small) upstream over HTTP: live streams cannot starve the other calls.

The upstream is a uvicorn server in this process that answers ``GET /timeline`` at once and keeps
``GET /shipments/{id}/stream`` open (server-sent events, a heartbeat now and then) until its client leaves;
both servers are stopped by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from prometheus_client import REGISTRY
from tweetshop_devstack.infra import free_port
from tweetshop_devstack.testing import eventually_async
from webapp.config import WebappSettings
from webapp.main import create_app

PER_CREDENTIAL = 2
TOTAL = 5
# Smaller than the number of streams: were streams on the same pool, ordinary calls would find none free.
CALL_CONNECTIONS = 2


class Upstream:
    """What the upstream saw: streams open now, and the X-Forwarded-For of each request."""

    def __init__(self) -> None:
        self.open_streams = 0
        self.forwarded_for: list[str | None] = []


def upstream_app(seen: Upstream) -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/timeline")
    async def timeline(request: Request) -> dict[str, Any]:
        seen.forwarded_for.append(request.headers.get("x-forwarded-for"))
        return {"tweets": []}

    @app.get("/shipments/{shipment_id}/stream")
    async def stream(shipment_id: str) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            seen.open_streams += 1
            try:
                yield f'event: snapshot\ndata: {{"id": "{shipment_id}"}}\n\n'.encode()
                while True:
                    await asyncio.sleep(0.2)
                    yield b": heartbeat\n\n"
            finally:
                seen.open_streams -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """``app`` on a real uvicorn server on a free port; stopped on the way out."""
    port = free_port()
    # proxy_headers=False, as `python -m webapp` runs it: trusted_proxies alone decides who the client is.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class OpenStream:
    """One live stream through the web app, read up to its first event and held open."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self._context = client.stream("GET", url)
        self.response: httpx.Response | None = None
        self.chunks: AsyncIterator[str] | None = None

    async def open(self) -> httpx.Response:
        self.response = await self._context.__aenter__()
        if self.response.status_code == 200:
            # Kept: an iterator dropped half-way closes the connection (the page would have left).
            self.chunks = self.response.aiter_text()
            first = await asyncio.wait_for(anext(self.chunks), timeout=10)
            assert "event: snapshot" in first
        else:
            await self.response.aread()
        return self.response

    async def close(self) -> None:
        await self._context.__aexit__(None, None, None)


def refused(limit: str) -> float:
    route = "/api/{service}/{path:path}"
    return REGISTRY.get_sample_value("tweetshop_rate_limited_total", {"route": route, "limit": limit}) or 0.0


@pytest.fixture
async def stack() -> AsyncIterator[tuple[str, Upstream]]:
    seen = Upstream()
    async with serving(upstream_app(seen)) as upstream_url:
        settings = WebappSettings(
            catalog_url=upstream_url,
            feed_url=upstream_url,
            checkout_url=upstream_url,
            tracking_url=upstream_url,
            stripe_url="http://127.0.0.1:8420",
            log_format="console",
            log_level="WARNING",
            stream_max_per_credential=PER_CREDENTIAL,
            stream_max_open=TOTAL,
            upstream_max_connections=CALL_CONNECTIONS,
            upstream_pool_timeout_s=2,
            stream_retry_after_s=7,
        )
        async with serving(create_app(settings)) as webapp_url:
            yield webapp_url, seen


async def test_streams_over_the_caps_get_429_and_other_calls_still_answer(stack: tuple[str, Upstream]) -> None:
    webapp_url, seen = stack
    streams: list[OpenStream] = []
    per_credential_before, total_before = refused("streams_per_credential"), refused("streams_total")
    async with httpx.AsyncClient(base_url=webapp_url, timeout=httpx.Timeout(10), limits=httpx.Limits()) as http:
        try:

            async def open_stream(token: str) -> httpx.Response:
                stream = OpenStream(http, f"/api/tracking/shipments/s-{token}/stream?token={token}")
                streams.append(stream)
                return await stream.open()

            # One buyer: up to PER_CREDENTIAL streams, then 429.
            assert [(await open_stream("buyer-1")).status_code for _ in range(PER_CREDENTIAL)] == [200, 200]
            over_credential = await open_stream("buyer-1")
            assert over_credential.status_code == 429
            assert over_credential.headers["retry-after"] == "7"
            assert over_credential.json()["error"] == "too_many_streams"
            assert over_credential.json()["details"]["limit"] == "streams_per_credential"

            # Other buyers fill the web app up to TOTAL, then anyone's next stream gets 429.
            for n in range(TOTAL - PER_CREDENTIAL):
                assert (await open_stream(f"buyer-{n + 2}")).status_code == 200
            assert seen.open_streams == TOTAL
            over_total = await open_stream("buyer-new")
            assert over_total.status_code == 429
            assert over_total.json()["details"]["limit"] == "streams_total"

            # Meanwhile, ordinary calls (more of them at once than their pool has connections) still answer.
            calls = await asyncio.gather(*(http.get("/api/feed/timeline") for _ in range(3 * CALL_CONNECTIONS)))
            assert [c.status_code for c in calls] == [200] * (3 * CALL_CONNECTIONS)
            assert refused("streams_per_credential") - per_credential_before == 1
            assert refused("streams_total") - total_before == 1

            # A buyer closes a page: its slot is given back, and a new stream opens.
            await streams[0].close()
            await eventually_async(
                lambda: seen.open_streams == TOTAL - 1, interval=0.05, what="the upstream stream to end"
            )

            async def a_stream_opens() -> bool:
                stream = OpenStream(http, "/api/tracking/shipments/s-late/stream?token=buyer-late")
                response = await stream.open()
                if response.status_code == 200:
                    streams.append(stream)
                    return True
                await stream.close()
                return False

            opened = False
            for _ in range(100):
                if opened := await a_stream_opens():
                    break
                await asyncio.sleep(0.1)
            assert opened, "the closed stream's slot was never given back"
        finally:
            for stream in streams:
                with contextlib.suppress(Exception):
                    await stream.close()
    await eventually_async(lambda: seen.open_streams == 0, interval=0.05, what="every upstream stream to end")


async def test_the_buyer_address_is_sent_on_and_a_made_up_one_is_not(stack: tuple[str, Upstream]) -> None:
    webapp_url, seen = stack
    async with httpx.AsyncClient(base_url=webapp_url, timeout=10) as http:
        plain = await http.get("/api/feed/timeline")
        spoofed = await http.get("/api/feed/timeline", headers={"X-Forwarded-For": "6.6.6.6"})
    assert (plain.status_code, spoofed.status_code) == (200, 200)
    # The web app trusts no proxy in front of it: the peer is the buyer, whatever the request says.
    assert seen.forwarded_for[-2:] == ["127.0.0.1", "127.0.0.1"]
