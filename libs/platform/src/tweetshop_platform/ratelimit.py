"""Per-client limits on writes and on refused credentials: 429 with ``Retry-After`` past them.

Every POST/PUT/PATCH/DELETE of a service counts against a limit of its client (``writes`` unless the service
names another one with ``limit_routes``: ``signups``, ``orders``, ``courier_locations``, or ``exempt``). Every
refused credential (401/403, or the 404 a wrong buyer token gets) counts against ``credential_failures``; a
client past it is answered 429 on any request that carries a credential, before the credential is checked.

The client is the peer's address; X-Forwarded-For is believed only when the peer is one of ``trusted_proxies``
(the web app's gateway sends the buyer's address there). ``courier_locations`` is counted per courier token
instead: couriers post often, and many of them may share an address.

Counters live in this process (the ``limits`` library's in-memory sliding-window counters): with several
replicas behind a load balancer, a client gets up to that many times the limit.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from prometheus_client import Counter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from .errors import DomainError
from .http import too_many_requests
from .proxies import Network, parse_trusted_proxies
from .proxies import is_trusted as _is_trusted
from .settings import ServiceSettings

WRITES = "writes"
SIGNUPS = "signups"
ORDERS = "orders"
COURIER_LOCATIONS = "courier_locations"
CREDENTIAL_FAILURES = "credential_failures"
EXEMPT = "exempt"
ROUTE_LIMITS = (WRITES, SIGNUPS, ORDERS, COURIER_LOCATIONS)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The extension key that names a route's limit in /openapi.json.
OPENAPI_KEY = "x-rate-limit"
# 404 codes that stand for a wrong buyer token (whether an order or its shipment exists is private to its buyer).
CREDENTIAL_REFUSAL_CODES = frozenset({"order_not_found", "unknown_shipment"})
# Set in a request's scope once its limits were counted (``RateLimiter.guard`` runs once per request, even when
# a handler ahead of FastAPI called it first).
COUNTED = "tweetshop.rate_limits_counted"
# Query parameters that carry a credential (the map page and EventSource cannot send headers).
_TOKEN_PARAMETERS = ("token", "access_token")


class SweptMemoryStorage(MemoryStorage):
    """``limits``' in-memory counters, with expired keys swept on the caller's thread at most once a second.

    The library's own storage starts a ``threading.Timer`` (a new thread) 10 ms after every counted request to
    sweep expired keys: at a thousand requests a second that was a thread start every ~10 ms and a sweep
    thread contending for the GIL (2–4 % of checkout's CPU in the drop benchmark's profile). Expiry itself
    does not depend on the sweep (a read of an expired counter finds it gone): the sweep only bounds memory, so
    doing it inline once a second changes no limit. ``limits`` is pinned (lock/dev.txt); its sweep hook is
    name-mangled, hence the spelling below, and a unit test fails if a pin bump removes it.
    """

    SWEEP_INTERVAL_S = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._next_sweep = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_INTERVAL_S
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


RATE_LIMITED = Counter(
    "tweetshop_rate_limited_total",
    "Requests refused with 429 by a per-client limit (limit: writes, signups, orders, courier_locations, "
    "credential_failures; the web app's gateway: streams_per_credential, streams_total)",
    ["route", "limit"],
)
CREDENTIALS_REFUSED = Counter(
    "tweetshop_credentials_refused_total",
    "Requests whose credential was refused (401, 403, or the 404 of a wrong buyer token); they count towards "
    "the credential_failures limit of their client",
    ["route"],
)


class RateLimited(Exception):
    """Answered 429 with ``Retry-After``."""

    def __init__(self, limit: str, retry_after_s: int, *, code: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        """The JSON error answer, in the shape of every other error."""
        return too_many_requests(self.code, self.message, self.retry_after_s, limit=self.limit)


def parse_limit(text: str, name: str) -> list[RateLimitItem]:
    """The limits of ``text`` ("60/minute;1000/day"), or ValueError naming the setting."""
    try:
        return list(parse_many(text))
    except ValueError:
        raise ValueError(
            f"{name}={text!r} is not a rate limit: write <count>/<period>, e.g. 60/minute or 60/minute;1000/day"
        ) from None


def client_address(scope: Scope, trusted: Sequence[Network]) -> str:
    """Who is asking: the peer, or, when the peer is a trusted proxy, the nearest untrusted X-Forwarded-For hop.

    X-Forwarded-For lists addresses left (first client) to right (last proxy's peer); only the part written by
    trusted proxies is believed, so it is read from the right and the first untrusted address is the client.
    """
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    forwarded = b",".join(v for k, v in scope.get("headers", []) if k == b"x-forwarded-for").decode("latin-1")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    address = peer
    while hops and _is_trusted(address, trusted):
        address = hops.pop()
    return address[:100]


def presented_credential(request: Request) -> str | None:
    """The credential a request carries (``Authorization``, or ``?token=``/``?access_token=``), or None."""
    header = request.headers.get("authorization", "").strip()
    if header:
        return header
    for name in _TOKEN_PARAMETERS:
        value = request.query_params.get(name, "").strip()
        if value:
            return value
    return None


def _credential_key(credential: str) -> str:
    # Never the credential itself in memory longer than the request: its hash.
    return hashlib.sha256(credential.encode()).hexdigest()[:32]


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


class RateLimiter:
    """The limits of one service process (one instance per app: its counters start at zero)."""

    def __init__(
        self,
        limits: Mapping[str, str],
        *,
        credential_failures: str,
        trusted_proxies: str = "",
        enabled: bool = True,
    ) -> None:
        unknown = set(limits) - set(ROUTE_LIMITS)
        if unknown:
            raise ValueError(f"unknown rate limits: {', '.join(sorted(unknown))}")
        self.enabled = enabled
        self.trusted = parse_trusted_proxies(trusted_proxies)
        self._limits = {name: parse_limit(text, f"rate_limit_{name}") for name, text in limits.items()}
        self._failures = parse_limit(credential_failures, "rate_limit_credential_failures")
        self._marks: dict[tuple[str, str], str] = {}
        self._kinds: dict[tuple[str, str], str | None] = {}
        self._strategy = SlidingWindowCounterRateLimiter(SweptMemoryStorage())

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> RateLimiter:
        """The limits ``rate_limit_*`` and ``trusted_proxies`` configure."""
        return cls(
            {
                WRITES: settings.rate_limit_writes,
                SIGNUPS: settings.rate_limit_signups,
                ORDERS: settings.rate_limit_orders,
                COURIER_LOCATIONS: settings.rate_limit_courier_locations,
            },
            credential_failures=settings.rate_limit_credential_failures,
            trusted_proxies=settings.trusted_proxies,
            enabled=settings.rate_limit_enabled,
        )

    # --- wiring ---------------------------------------------------------------------------------------------

    def dependencies(self) -> list[Any]:
        """For ``FastAPI(dependencies=...)``: the check every route then runs first (none when disabled)."""
        return [Depends(self.guard)] if self.enabled else []

    def install(self, app: FastAPI) -> None:
        """429 answers, refused credentials counted, 429 documented. After ``install_common`` (whose error handlers
        it wraps) and ``install_error_documentation`` (whose document it adds to)."""
        app.state.rate_limiter = self
        if not self.enabled:
            return

        async def on_rate_limited(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, RateLimited)
            RATE_LIMITED.labels(_route_path(request), exc.limit).inc()
            return exc.response()

        app.add_exception_handler(RateLimited, on_rate_limited)
        for kind in (DomainError, StarletteHTTPException):
            previous = app.exception_handlers.get(kind)
            if previous is not None:
                app.add_exception_handler(kind, self._counting_refusals(previous))
        _document_429(app)

    def _counting_refusals(
        self, handler: Callable[[Request, Any], Any]
    ) -> Callable[[Request, Exception], Coroutine[Any, Any, Response]]:
        async def counting(request: Request, exc: Exception) -> Response:
            status = int(getattr(exc, "status", getattr(exc, "status_code", 0)))
            code = str(getattr(exc, "code", ""))
            if status in (401, 403) or (status == 404 and code in CREDENTIAL_REFUSAL_CODES):
                self.credential_refused(request)
            response: Response = await handler(request, exc)
            return response

        return counting

    def mark(self, method: str, path: str, limit: str) -> None:
        """Route ``method path`` (its template, e.g. /orders/{order_id}) counts against ``limit``."""
        if limit not in (*ROUTE_LIMITS, EXEMPT):
            raise ValueError(f"unknown rate limit {limit!r}: one of {', '.join((*ROUTE_LIMITS, EXEMPT))}")
        self._marks[(method.upper(), path)] = limit
        self._kinds.clear()

    # --- checks ---------------------------------------------------------------------------------------------

    def client_of(self, request: Request) -> str:
        """The client address the limits count against."""
        return client_address(request.scope, self.trusted)

    def _kind(self, method: str, path: str) -> str | None:
        key = (method, path)
        if key not in self._kinds:
            self._kinds[key] = self._marks.get(key, WRITES if method in WRITE_METHODS else None)
        return self._kinds[key]

    async def guard(self, request: Request) -> None:
        """FastAPI dependency, run before the route's own: the credential lockout, then the route's limit. Once
        per request: a request already counted ahead of FastAPI (``COUNTED``, checkout's refusals) is not counted
        again."""
        if request.scope.get(COUNTED):
            return
        await self._guard(request)
        request.scope[COUNTED] = True  # only once it passed: a refused request is refused again, never let through

    async def _guard(self, request: Request) -> None:
        kind = self._kind(request.method, _route_path(request))
        if kind == EXEMPT:
            return
        credential = presented_credential(request)
        if kind is None and credential is None:
            return
        client = self.client_of(request)
        if credential is not None:
            for item in self._failures:
                if not self._strategy.test(item, CREDENTIAL_FAILURES, client):
                    raise RateLimited(
                        CREDENTIAL_FAILURES,
                        self._retry_after(item, CREDENTIAL_FAILURES, client),
                        code="too_many_failed_credentials",
                        message=(
                            "too many refused credentials from this address; requests with a credential are "
                            "refused for a while, retry later"
                        ),
                    )
        if kind is None:
            return
        key = _credential_key(credential) if kind == COURIER_LOCATIONS and credential else client
        for item in self._limits[kind]:
            if not self._strategy.hit(item, kind, key):
                raise RateLimited(
                    kind,
                    self._retry_after(item, kind, key),
                    code="rate_limited",
                    message=f"too many requests ({kind}: {item}); retry later",
                )

    def credential_refused(self, request: Request) -> None:
        """Count a refused credential against its client (only when the request carried one)."""
        if presented_credential(request) is None:
            return
        CREDENTIALS_REFUSED.labels(_route_path(request)).inc()
        client = self.client_of(request)
        for item in self._failures:
            self._strategy.hit(item, CREDENTIAL_FAILURES, client)

    def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        stats = self._strategy.get_window_stats(item, *identifiers)
        return max(1, math.ceil(stats.reset_time - time.time()))


def limit_routes(app: FastAPI, limits: Mapping[str, str]) -> None:
    """Name the limit of some routes: ``{"POST /orders": ORDERS, "POST /webhooks/stripe": EXEMPT}``.

    Other writes count against ``writes``; reads are not limited (the credential lockout still applies). Each
    route must exist, and its limit shows in /openapi.json as ``x-rate-limit``.
    """
    limiter: RateLimiter | None = getattr(app.state, "rate_limiter", None)
    routes = {
        (method, route.path): route
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    for spec, limit in limits.items():
        method, _, path = spec.partition(" ")
        route = routes.get((method.upper(), path))
        if route is None:
            raise ValueError(f"limit_routes: no route {spec!r}")
        if limiter is not None:
            limiter.mark(method, path, limit)
        route.openapi_extra = {**(route.openapi_extra or {}), OPENAPI_KEY: limit}


_429_DOC: dict[str, Any] = {
    "description": (
        "Too many requests from this client (a rate limit, or too many refused credentials); "
        "retry after Retry-After seconds"
    ),
    "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _document_429(app: FastAPI) -> None:
    """Each operation that may answer 429 says so in /openapi.json."""
    previous = app.openapi

    def openapi() -> dict[str, Any]:
        document = previous()
        for path, item in document.get("paths", {}).items():
            if path in _EXEMPT_PATHS:
                continue
            for operation in item.values():
                if isinstance(operation, dict) and operation.get(OPENAPI_KEY) != EXEMPT and "responses" in operation:
                    operation["responses"].setdefault("429", _429_DOC)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
