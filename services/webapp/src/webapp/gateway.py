"""The small gateway: ``/api/<service>/<path>`` → the service's public API, answers streamed back as they come.

The pages call one origin (no CORS anywhere), and only the public resources of each service are reachable:
operations endpoints (metrics, webhooks, courier tokens' issuing is operator-only anyway) stay inside.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import structlog
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import Counter, Histogram
from tweetshop_platform.http import error_body

log = structlog.get_logger(__name__)

# The first path segment each service exposes through the gateway.
PUBLIC_RESOURCES: Mapping[str, frozenset[str]] = {
    "catalog": frozenset({"merchants", "products"}),
    "feed": frozenset({"tweets", "timeline", "follows"}),
    "checkout": frozenset({"orders"}),
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
    return Route(service, base_url, "/" + quote(path, safe=_PATH_SAFE))


def _is_stream(request: Request, path: str) -> bool:
    return path.endswith("/stream") or "text/event-stream" in request.headers.get("accept", "")


async def forward(
    client: httpx.AsyncClient,
    request: Request,
    target: Route,
    *,
    timeout: httpx.Timeout,
    stream_timeout: httpx.Timeout,
) -> Response:
    """Send the request on and stream the answer back; 502/504 as JSON when the service does not answer."""
    headers = {name: request.headers[name] for name in _FORWARDED_REQUEST_HEADERS if name in request.headers}
    headers["x-correlation-id"] = str(request.state.correlation_id)
    upstream_request = client.build_request(
        request.method,
        target.base_url + target.path,
        params=request.url.query or None,
        headers=headers,
        content=await request.body(),
        timeout=stream_timeout if _is_stream(request, target.path) else timeout,
    )
    started = time.perf_counter()
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.TimeoutException as exc:
        UPSTREAM_REQUESTS.labels(target.upstream, "timeout").inc()
        log.warning("upstream timed out", upstream=target.upstream, error=repr(exc))
        return JSONResponse(
            error_body("upstream_timeout", f"{target.upstream} did not answer in time; try again in a moment"),
            status_code=504,
        )
    except httpx.TransportError as exc:
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
    return StreamingResponse(
        _relay(upstream, target.upstream), status_code=upstream.status_code, headers=response_headers
    )


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
