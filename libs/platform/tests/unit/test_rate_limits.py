"""Per-client limits: writes, credential guesses, who the client is, and the wiring of the real services."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from prometheus_client import REGISTRY
from pydantic import SecretStr
from tweetshop_platform import ratelimit
from tweetshop_platform.auth import bearer_token
from tweetshop_platform.errors import Forbidden, NotFound
from tweetshop_platform.http import install_common, install_operator_check
from tweetshop_platform.openapi import install_error_documentation
from tweetshop_platform.proxies import parse_trusted_proxies
from tweetshop_platform.ratelimit import RateLimiter, client_address, limit_routes

OPERATOR_KEY = "unit-test-operator-key"
COURIER_TOKEN = "courier-token-of-s1"


pytestmark = pytest.mark.usefixtures("no_tweetshop_environment")


def limiter(**limits: str) -> RateLimiter:
    trusted = limits.pop("trusted_proxies", "")
    failures = limits.pop("credential_failures", "1000/minute")
    wanted = {"writes": "1000/minute", "signups": "1000/minute", "orders": "1000/minute"}
    wanted.update({"courier_locations": "1000/minute", **limits})
    return RateLimiter(wanted, credential_failures=failures, trusted_proxies=trusted)


def service_app(limits: RateLimiter) -> FastAPI:
    """A service wired as ``runtime.create_service_app`` wires one, with routes like the real ones."""
    app = FastAPI(dependencies=limits.dependencies())
    install_common(app, {}, max_body_bytes=10_000)
    install_operator_check(app, SecretStr(OPERATOR_KEY))

    @app.post("/merchants", status_code=201)
    async def register() -> dict[str, str]:
        return {"id": str(uuid.uuid4())}

    @app.post("/tweets", status_code=201)
    async def tweet() -> dict[str, str]:
        return {"id": str(uuid.uuid4())}

    @app.post("/orders", status_code=202)
    async def order() -> dict[str, str]:
        return {"id": str(uuid.uuid4())}

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str, request: Request) -> dict[str, str]:
        if bearer_token(request) != "right-token":
            raise NotFound("no such order (or not yours)", code="order_not_found")
        return {"id": order_id}

    @app.post("/webhooks/stripe")
    async def webhook() -> dict[str, bool]:
        return {"received": True}

    async def courier(request: Request) -> None:
        if bearer_token(request) != COURIER_TOKEN:
            raise Forbidden("this token is not the courier token of this shipment")

    @app.post("/shipments/{shipment_id}/locations", dependencies=[Depends(courier)])
    async def locations(shipment_id: str) -> dict[str, int]:
        return {"accepted": 1}

    install_error_documentation(app)
    limits.install(app)
    limit_routes(
        app,
        {
            "POST /merchants": ratelimit.SIGNUPS,
            "POST /orders": ratelimit.ORDERS,
            "POST /webhooks/stripe": ratelimit.EXEMPT,
            "POST /shipments/{shipment_id}/locations": ratelimit.COURIER_LOCATIONS,
        },
    )
    return app


def client(app: FastAPI, address: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://service")


def refused(route: str, limit: str) -> float:
    return REGISTRY.get_sample_value("tweetshop_rate_limited_total", {"route": route, "limit": limit}) or 0.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- limits on writes ------------------------------------------------------------------------------------


async def test_past_its_limit_a_client_gets_429_with_retry_after_and_the_refusal_is_counted() -> None:
    app = service_app(limiter(signups="3/hour"))
    before = refused("/merchants", "signups")
    async with client(app) as http:
        answers = [await http.post("/merchants") for _ in range(5)]

    assert [a.status_code for a in answers] == [201, 201, 201, 429, 429]
    too_many = answers[3]
    assert too_many.json()["error"] == "rate_limited"
    assert too_many.json()["details"]["limit"] == "signups"
    retry_after = int(too_many.headers["Retry-After"])
    assert 1 <= retry_after <= 3600
    assert too_many.json()["details"]["retry_after_s"] == retry_after
    assert refused("/merchants", "signups") - before == 2


async def test_each_client_and_each_limit_counts_on_its_own() -> None:
    app = service_app(limiter(signups="1/hour", writes="2/minute"))
    async with client(app, "203.0.113.1") as first, client(app, "203.0.113.2") as second:
        assert (await first.post("/merchants")).status_code == 201
        assert (await first.post("/merchants")).status_code == 429
        # Another address: its own count. Another kind of write: another limit.
        assert (await second.post("/merchants")).status_code == 201
        assert (await first.post("/tweets")).status_code == 201
        assert (await first.post("/tweets")).status_code == 201
        assert (await first.post("/tweets")).status_code == 429
        # Reads are not limited.
        assert [(await first.get("/healthz")).status_code for _ in range(5)] == [200] * 5


async def test_orders_have_their_own_limit_and_stripe_webhooks_none() -> None:
    app = service_app(limiter(orders="2/minute", writes="2/minute"))
    async with client(app) as http:
        orders = [(await http.post("/orders")).status_code for _ in range(3)]
        webhooks = [(await http.post("/webhooks/stripe")).status_code for _ in range(10)]
    assert orders == [202, 202, 429]
    assert webhooks == [200] * 10


async def test_courier_locations_are_counted_per_courier_token_not_per_address() -> None:
    app = service_app(limiter(courier_locations="3/minute", writes="1/minute"))
    async with client(app, "198.51.100.1") as one, client(app, "198.51.100.2") as other:
        sent = [
            (await http.post("/shipments/s1/locations", headers=bearer(COURIER_TOKEN))).status_code
            for http in (one, other, one, other)
        ]
        # The same address with another (here: wrong) token is another count: 403, not 429.
        wrong = await one.post("/shipments/s1/locations", headers=bearer("another-token"))
    assert sent == [200, 200, 200, 429]
    assert wrong.status_code == 403


# --- credential guesses ----------------------------------------------------------------------------------


async def test_after_n_refused_operator_keys_even_the_right_key_gets_429_before_it_is_checked() -> None:
    app = service_app(limiter(credential_failures="3/10 minutes"))
    before = refused("/ops/operator", "credential_failures")
    async with client(app, "192.0.2.9") as guesser, client(app, "192.0.2.10") as operator:
        guesses = [(await guesser.get("/ops/operator", headers=bearer(f"guess-{i}"))).status_code for i in range(3)]
        locked = await guesser.get("/ops/operator", headers=bearer(OPERATOR_KEY))
        # No credential, no check: still answered as before (401), and another address is not locked out.
        anonymous = await guesser.get("/ops/operator")
        elsewhere = await operator.get("/ops/operator", headers=bearer(OPERATOR_KEY))

    assert guesses == [403, 403, 403]
    assert locked.status_code == 429
    assert locked.json()["error"] == "too_many_failed_credentials"
    assert int(locked.headers["Retry-After"]) >= 1
    assert anonymous.status_code == 401
    assert elsewhere.status_code == 204
    assert refused("/ops/operator", "credential_failures") - before == 1


async def test_a_wrong_buyer_token_counts_as_a_refused_credential_and_a_right_one_does_not() -> None:
    app = service_app(limiter(credential_failures="2/minute"))
    async with client(app) as http:
        rights = [(await http.get("/orders/o1", headers=bearer("right-token"))).status_code for _ in range(5)]
        wrongs = [(await http.get("/orders/o1", headers=bearer("guess"))).status_code for _ in range(3)]
        after = await http.get("/orders/o1", headers=bearer("right-token"))
    assert rights == [200] * 5
    assert wrongs == [404, 404, 429]
    assert after.status_code == 429


async def test_merchant_key_guesses_on_writes_lock_out_too() -> None:
    app = service_app(limiter(credential_failures="2/minute"))
    async with client(app) as http:
        answers = [
            (await http.post("/shipments/s1/locations", headers=bearer(f"guess-{i}"))).status_code for i in range(3)
        ]
    assert answers == [403, 403, 429]


# --- who the client is -----------------------------------------------------------------------------------


def scope(peer: str, forwarded: str | None = None) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"type": "http", "client": (peer, 1234), "headers": headers}


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    gateway = parse_trusted_proxies("10.0.0.0/8, 127.0.0.1")
    assert client_address(scope("203.0.113.5", "1.2.3.4"), gateway) == "203.0.113.5"
    assert client_address(scope("10.1.2.3", "198.51.100.7"), gateway) == "198.51.100.7"
    # A client's own X-Forwarded-For is left of what the proxy added: only the proxy's part is believed.
    assert client_address(scope("10.1.2.3", "6.6.6.6, 198.51.100.7"), gateway) == "198.51.100.7"
    assert client_address(scope("10.1.2.3", "6.6.6.6, 198.51.100.7, 10.9.9.9"), gateway) == "198.51.100.7"
    assert client_address(scope("10.1.2.3"), gateway) == "10.1.2.3"
    assert client_address(scope("127.0.0.1", "198.51.100.7"), ()) == "127.0.0.1"
    with pytest.raises(ValueError, match="not an IP"):
        parse_trusted_proxies("gateway.local")


async def test_buyers_behind_a_trusted_gateway_are_counted_each_on_their_own() -> None:
    app = service_app(limiter(orders="1/minute", trusted_proxies="127.0.0.1"))
    async with client(app, "127.0.0.1") as gateway, client(app, "203.0.113.50") as direct:
        first = await gateway.post("/orders", headers={"X-Forwarded-For": "198.51.100.1"})
        second = await gateway.post("/orders", headers={"X-Forwarded-For": "198.51.100.2"})
        again = await gateway.post("/orders", headers={"X-Forwarded-For": "198.51.100.1"})
        # Not from the gateway: a made-up X-Forwarded-For changes nothing.
        spoof_1 = await direct.post("/orders", headers={"X-Forwarded-For": "198.51.100.3"})
        spoof_2 = await direct.post("/orders", headers={"X-Forwarded-For": "198.51.100.4"})
    assert [first.status_code, second.status_code, again.status_code] == [202, 202, 429]
    assert [spoof_1.status_code, spoof_2.status_code] == [202, 429]


# --- settings and documentation ----------------------------------------------------------------------------


def test_a_malformed_limit_is_refused_naming_its_setting() -> None:
    with pytest.raises(ValueError, match="rate_limit_orders"):
        RateLimiter({"orders": "lots"}, credential_failures="10/minute")
    with pytest.raises(ValueError, match="limit_routes"):
        limit_routes(service_app(limiter()), {"POST /nowhere": ratelimit.WRITES})


async def test_429_is_documented_and_each_route_names_its_limit() -> None:
    app = service_app(limiter())
    async with client(app) as http:
        document = (await http.get("/openapi.json")).json()
    merchants = document["paths"]["/merchants"]["post"]
    assert merchants["x-rate-limit"] == "signups"
    assert merchants["responses"]["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
    assert "429" not in document["paths"]["/webhooks/stripe"]["post"]["responses"]
    assert "429" not in document["paths"]["/healthz"]["get"]["responses"]


# --- the real services -------------------------------------------------------------------------------------


@pytest.fixture
async def catalog_app() -> AsyncIterator[FastAPI]:
    from catalog.config import CatalogSettings
    from catalog.main import create_app

    # No lifespan: no database needed, the limits answer before any handler would use one.
    settings = CatalogSettings(
        log_format="console",
        database_url=SecretStr("postgresql://nobody@127.0.0.1:1/none"),
        rate_limit_signups="2/hour",
        rate_limit_credential_failures="2/minute",
        operator_key=SecretStr(OPERATOR_KEY),
    )
    yield create_app(settings)


async def test_catalog_limits_merchant_registrations_and_operator_key_guesses(catalog_app: FastAPI) -> None:
    async with client(catalog_app) as http:
        # Invalid bodies (422): the limit is checked first, so a script cannot probe for free either.
        signups = [(await http.post("/merchants", json={})).status_code for _ in range(3)]
        guesses = [(await http.get("/ops/operator", headers=bearer("guess"))).status_code for _ in range(3)]
        document = (await http.get("/openapi.json")).json()
    assert signups == [422, 422, 429]
    assert guesses == [403, 403, 429]
    assert document["paths"]["/merchants"]["post"]["x-rate-limit"] == "signups"


async def test_a_service_with_limits_off_never_answers_429() -> None:
    from catalog.config import CatalogSettings
    from catalog.main import create_app

    settings = CatalogSettings(
        log_format="console",
        database_url=SecretStr("postgresql://nobody@127.0.0.1:1/none"),
        rate_limit_enabled=False,
        rate_limit_signups="1/hour",
    )
    async with client(create_app(settings)) as http:
        assert [(await http.post("/merchants", json={})).status_code for _ in range(3)] == [422] * 3


def test_swept_storage_counts_and_expires_without_starting_a_thread_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The counters behave as limits' own (a full window refuses, an expired one allows again), the sweep runs
    inline at most once a second, and no request starts a thread (the library's storage started a Timer per
    ~10 ms of traffic). Fails if a bump of the pinned ``limits`` renames the hook it overrides."""
    import threading

    from limits import parse
    from limits.strategies import SlidingWindowCounterRateLimiter

    storage = ratelimit.SweptMemoryStorage()
    assert hasattr(storage, "_MemoryStorage__schedule_expiry") and hasattr(storage, "_MemoryStorage__expire_events")
    started: list[threading.Thread] = []
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self))
    strategy = SlidingWindowCounterRateLimiter(storage)
    item = parse("3/second")
    assert [strategy.hit(item, "client") for _ in range(4)] == [True, True, True, False]
    assert started == []

    sweeps: list[float] = []
    original = storage._MemoryStorage__expire_events  # type: ignore[attr-defined]
    monkeypatch.setattr(storage, "_MemoryStorage__expire_events", lambda: (sweeps.append(1), original()))
    now = [storage._next_sweep]  # the next sweep is due
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now[0])
    for _ in range(50):
        storage.incr("other", expiry=60)
    assert len(sweeps) == 1  # once, then not again within the second
    now[0] += 1.5
    storage.incr("other", expiry=60)
    assert len(sweeps) == 2
