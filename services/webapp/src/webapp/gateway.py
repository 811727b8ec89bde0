"""The small gateway: ``/api/<service>/<path>`` → the service's public API, answers streamed back as they come.

The pages call one origin (no CORS anywhere), and only the public resources of each service are reachable:
operations endpoints (metrics, webhooks, courier tokens' issuing is operator-only anyway) stay inside.

Every upstream call has a connect, write, read and pool timeout. Live streams (server-sent events) go through a
client and a connection pool of their own, so however many are open, ordinary calls still find a connection;
their number is capped per credential and in all (429 with Retry-After past a cap), and a stream's slot is
given back as soon as it ends or its client goes away. The buyer's address goes on to the APIs as
X-Forwarded-For, so that their per-client limits count each buyer, not the web app.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import quote

import anyio
import httpx
import structlog
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import Receive, Scope, Send
from tweetshop_platform import telemetry
from tweetshop_platform.http import error_body, too_many_requests
from tweetshop_platform.proxies import Network, parse_trusted_proxies
from tweetshop_platform.ratelimit import RATE_LIMITED, client_address, presented_credential

from . import buyer_session
from .config import WebappSettings

log = structlog.get_logger(__name__)

# The first path segment each service exposes through the gateway.
PUBLIC_RESOURCES: Mapping[str, frozenset[str]] = {
    "catalog": frozenset({"merchants", "products"}),
    "feed": frozenset({"tweets", "timeline", "follows"}),
    "checkout": frozenset({"orders", "buyers"}),
    "tracking": frozenset({"shipments"}),
}
METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]

# Request headers the APIs need; cookies and the like never leave the web app.
_FORWARDED_REQUEST_HEADERS = ("accept", "authorization", "content-type", "idempotency-key", "last-event-id")
# Response headers the pages may need; hop-by-hop ones are the server's business.
_FORWARDED_RESPONSE_HEADERS = (
    "cache-control",
    "content-encoding",
    "content-type",
    "idempotent-replayed",
    "retry-after",
    "x-accel-buffering",
)
# Characters left as they are when a decoded path is sent on (everything else is percent-encoded again).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"

UPSTREAM_REQUESTS = Counter(
    "tweetshop_webapp_upstream_requests_total", "Requests the gateway passed to a service", ["upstream", "status"]
)
UPSTREAM_SECONDS = Histogram(
    "tweetshop_webapp_upstream_seconds",
    "Time until a service's answer starts (headers received)",
    ["upstream"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OPEN_STREAMS = Gauge("tweetshop_webapp_open_streams", "Live streams open through the gateway now")
STREAMS_PER_CREDENTIAL = "streams_per_credential"
STREAMS_TOTAL = "streams_total"


@dataclass(frozen=True)
class Route:
    """Where one gateway request goes."""

    upstream: str
    base_url: str
    path: str  # percent-encoded, starts with "/"


class RouteRefused(Exception):
    """The path names no public resource of a known service."""


def route(upstreams: Mapping[str, str], service: str, path: str) -> Route:
    """The upstream request for ``/api/<service>/<path>``, or RouteRefused."""
    base_url = upstreams.get(service)
    if base_url is None:
        raise RouteRefused(f"no API named {service!r}: use one of {', '.join(sorted(upstreams))}")
    segments = path.split("/")
    # Decoded path: "..", "." or empty segments could climb out of the public resources upstream.
    if any(s in ("", ".", "..") for s in segments) or segments[0] not in PUBLIC_RESOURCES.get(service, ()):
        raise RouteRefused(f"/api/{service}/{path} is not a public resource of {service}")
    if service == "checkout" and path in buyer_session.CREDENTIAL_ROUTES:
        # They answer a buyer credential: only /account/... calls them, and keeps it in the cookie.
        raise RouteRefused(f"/api/{service}/{path} is not public: use /account/session or /account/link")
    return Route(service, base_url, "/" + quote(path, safe=_PATH_SAFE))


# feed's resources that belong to the buyer whose cookie it is: its follows and its followed timeline.
_FEED_BUYER_PATHS = ("/follows", "/timeline")


def feed_bearer(request: Request, target: Route) -> str | None:
    """``Bearer <credential>`` from the cookie for feed's follows and timeline, when the request has no
    Authorization of its own (feed checks the credential against checkout's hashes), else None."""
    if target.upstream != "feed" or "authorization" in request.headers:
        return None
    if not any(target.path == p or target.path.startswith(p + "/") for p in _FEED_BUYER_PATHS):
        return None
    credential = buyer_session.credential_of(request)
    return f"Bearer {credential}" if credential else None


def _is_stream(request: Request, path: str) -> bool:
    return path.endswith("/stream") or "text/event-stream" in request.headers.get("accept", "")


class StreamSlots:
    """How many live streams are open, per credential and in all; a slot is taken before a stream opens."""

    def __init__(self, *, per_credential: int, total: int) -> None:
        self.per_credential = per_credential
        self.total = total
        self._open: dict[str, int] = {}
        self._count = 0

    @property
    def open(self) -> int:
        """Streams open now."""
        return self._count

    def acquire(self, key: str) -> str | None:
        """Take a slot for ``key``: None when taken, else the cap that refused it."""
        if self._count >= self.total:
            return STREAMS_TOTAL
        if self._open.get(key, 0) >= self.per_credential:
            return STREAMS_PER_CREDENTIAL
        self._open[key] = self._open.get(key, 0) + 1
        self._count += 1
        OPEN_STREAMS.inc()
        return None

    def release(self, key: str) -> None:
        """Give ``key``'s slot back (once per acquire)."""
        left = self._open.get(key, 0) - 1
        if left < 0:
            return
        if left:
            self._open[key] = left
        else:
            del self._open[key]
        self._count -= 1
        OPEN_STREAMS.dec()


def _upstream_client(
    settings: WebappSettings, transport: httpx.AsyncBaseTransport | None, read_timeout_s: float, connections: int
) -> httpx.AsyncClient:
    """An HTTP client to the APIs with a timeout on each phase and a pool of its own."""
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        timeout=httpx.Timeout(
            connect=settings.upstream_connect_timeout_s,
            read=read_timeout_s,
            write=settings.upstream_write_timeout_s,
            pool=settings.upstream_pool_timeout_s,
        ),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=min(40, connections)),
    )


class Gateway:
    """The two clients of the gateway: ordinary calls and live streams, each with its own pool and timeouts.

    ``async with Gateway(settings) as gateway``: the clients are closed on the way out.
    """

    def __init__(self, settings: WebappSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.trusted = parse_trusted_proxies(settings.trusted_proxies)
        self.client = _upstream_client(
            settings, transport, settings.upstream_timeout_s, settings.upstream_max_connections
        )
        # Streams: as many connections as streams may be open, so a stream never waits for another one's.
        self.stream_client = _upstream_client(
            settings, transport, settings.stream_read_timeout_s, settings.stream_max_open
        )
        self.streams = StreamSlots(per_credential=settings.stream_max_per_credential, total=settings.stream_max_open)
        # With tracing on (TWEETSHOP_TRACING=otlp), each call to a service is a CLIENT span whose context goes with
        # it (traceparent): the service's spans join the page's trace.
        for client in (self.client, self.stream_client):
            telemetry.instrument_httpx(client, settings.service_name)

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.client.aclose()
        await self.stream_client.aclose()

    def _stream_key(self, request: Request) -> str:
        credential = presented_credential(request)
        if credential is not None:
            return "credential:" + hashlib.sha256(credential.encode()).hexdigest()[:32]
        return "address:" + client_address(request.scope, self.trusted)

    async def forward(self, request: Request, target: Route) -> Response:
        """Send the request on and stream the answer back; 502/504 when the service does not answer, 429 past a
        cap of live streams. The buyer's cookie becomes the bearer of the buyer's own checkout calls
        (``buyer_session``), for a state-changing one only from the web app's own pages (else 403)."""
        cookie_bearer = buyer_session.upstream_bearer(request, target.upstream, target.path) or feed_bearer(
            request, target
        )
        if cookie_bearer is not None:
            problem = buyer_session.csrf_problem(request)
            if problem is not None:
                return buyer_session.csrf_refused(problem)
            answer = await _forward(self.client, request, target, self.trusted, authorization=cookie_bearer)
            if answer.status_code == 401 and target.upstream == "checkout":
                # Revoked (signed out everywhere, or deleted): forget it. Only checkout's word counts: feed knows
                # credentials a moment later, from checkout's topic.
                buyer_session.clear_cookie(answer, request)
            elif answer.status_code == 200 and request.method == "DELETE" and target.path == "/buyers/me":
                buyer_session.clear_cookie(answer, request)  # the account is deleted: nothing left to sign in to
            return answer
        if not _is_stream(request, target.path):
            return await _forward(self.client, request, target, self.trusted)
        key = self._stream_key(request)
        refused = self.streams.acquire(key)
        if refused is not None:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            RATE_LIMITED.labels(route, refused).inc()
            log.warning("live stream refused", upstream=target.upstream, cap=refused, open=self.streams.open)
            what = "this credential" if refused == STREAMS_PER_CREDENTIAL else "this web app"
            return too_many_requests(
                "too_many_streams",
                f"{what} has as many live streams open as it may; close one or retry later",
                self.settings.stream_retry_after_s,
                limit=refused,
            )
        try:
            return await _forward(
                self.stream_client, request, target, self.trusted, on_close=lambda: self.streams.release(key)
            )
        except BaseException:
            self.streams.release(key)
            raise


async def _forward(
    client: httpx.AsyncClient,
    request: Request,
    target: Route,
    trusted: Sequence[Network] = (),
    *,
    on_close: Callable[[], None] | None = None,
    authorization: str | None = None,
) -> Response:
    headers = {name: request.headers[name] for name in _FORWARDED_REQUEST_HEADERS if name in request.headers}
    if authorization is not None:
        headers["authorization"] = authorization
    headers["x-correlation-id"] = str(request.state.correlation_id)
    # Who the buyer is, for the APIs' per-client limits (believed only from a proxy they trust: this web app).
    headers["x-forwarded-for"] = client_address(request.scope, trusted)
    upstream_request = client.build_request(
        request.method,
        target.base_url + target.path,
        params=request.url.query or None,
        headers=headers,
        content=await request.body(),
    )
    started = time.perf_counter()
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.TimeoutException as exc:
        _closed(on_close)
        UPSTREAM_REQUESTS.labels(target.upstream, "timeout").inc()
        log.warning("upstream timed out", upstream=target.upstream, error=repr(exc))
        return JSONResponse(
            error_body("upstream_timeout", f"{target.upstream} did not answer in time; try again in a moment"),
            status_code=504,
        )
    except httpx.TransportError as exc:
        _closed(on_close)
        UPSTREAM_REQUESTS.labels(target.upstream, "unreachable").inc()
        log.warning("upstream unreachable", upstream=target.upstream, error=repr(exc))
        return JSONResponse(
            error_body("upstream_unavailable", f"{target.upstream} is not reachable right now; try again in a moment"),
            status_code=502,
        )
    UPSTREAM_SECONDS.labels(target.upstream).observe(time.perf_counter() - started)
    UPSTREAM_REQUESTS.labels(target.upstream, str(upstream.status_code)).inc()
    response_headers = {
        name: upstream.headers[name] for name in _FORWARDED_RESPONSE_HEADERS if name in upstream.headers
    }
    return _Relayed(upstream, target.upstream, on_close, status_code=upstream.status_code, headers=response_headers)


def _closed(on_close: Callable[[], None] | None) -> None:
    if on_close is not None:
        on_close()


class _Relayed(StreamingResponse):
    """The upstream answer, streamed; whatever way it ends (done, cut, client gone), the upstream connection is
    closed and ``on_close`` runs, once."""

    def __init__(
        self,
        upstream: httpx.Response,
        name: str,
        on_close: Callable[[], None] | None,
        *,
        status_code: int,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(_relay(upstream, name), status_code=status_code, headers=headers)
        self.upstream = upstream
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            on_close, self.on_close = self.on_close, None
            _closed(on_close)  # first, and without waiting: the request may be cancelled (client gone)
            with anyio.CancelScope(shield=True):
                await self.upstream.aclose()


async def _relay(upstream: httpx.Response, name: str) -> AsyncIterator[bytes]:
    """The answer's bytes as they arrive (server-sent events too); the upstream connection is closed in any case."""
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.TransportError as exc:
        # Headers are gone already: all that is left is to end the answer early (the page sees a cut stream).
        log.warning("upstream answer cut", upstream=name, error=repr(exc))
    finally:
        await upstream.aclose()
