"""The gateway's clients: every upstream call has its four timeouts; live streams have a pool and caps of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from webapp import gateway
from webapp.config import WebappSettings
from webapp.main import create_app


async def test_every_upstream_call_has_a_connect_read_write_and_pool_timeout() -> None:
    settings = WebappSettings(stream_read_timeout_s=45, upstream_pool_timeout_s=4, upstream_timeout_s=12)
    async with gateway.Gateway(settings) as upstreams:
        calls, streams = upstreams.client.timeout, upstreams.stream_client.timeout
        assert upstreams.client is not upstreams.stream_client
    for timeout in (calls, streams):
        assert None not in (timeout.connect, timeout.read, timeout.write, timeout.pool)
    assert (calls.read, calls.pool) == (12, 4)
    assert streams.read == 45


def test_stream_slots_cap_per_credential_and_in_all_and_come_back() -> None:
    slots = gateway.StreamSlots(per_credential=2, total=3)
    assert [slots.acquire("a"), slots.acquire("a"), slots.acquire("a")] == [None, None, "streams_per_credential"]
    assert slots.acquire("b") is None
    assert slots.acquire("c") == "streams_total"
    slots.release("a")
    assert slots.acquire("c") is None
    assert slots.open == 3
    for key in ("a", "b", "c"):
        slots.release(key)
    slots.release("c")  # once too often: nothing to give back
    assert slots.open == 0


def test_trusted_proxies_of_the_web_app_must_be_addresses() -> None:
    with pytest.raises(ValueError, match="not an IP"):
        WebappSettings(trusted_proxies="load-balancer")
    assert WebappSettings(trusted_proxies="10.0.0.0/8, 127.0.0.1").trusted_proxies


async def test_a_stream_refused_upstream_gives_its_slot_back() -> None:
    def tracking(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield b'{"error": "unknown_shipment", "message": "no"}'

        # Streamed, as an answer from the network is.
        return httpx.Response(404, headers={"content-type": "application/json"}, content=body())

    settings = WebappSettings(tracking_url="http://tracking.test", stream_max_per_credential=1, log_level="WARNING")
    app = create_app(settings, transport=httpx.MockTransport(tracking))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://webapp") as client:
            answers = [
                (await client.get("/api/tracking/shipments/s1/stream", params={"token": "t"})).status_code
                for _ in range(3)
            ]
        assert app.state.gateway.streams.open == 0
    assert answers == [404, 404, 404]
