"""webapp: the buyer's pages, the merchant's pages, and the gateway they call. The only wiring."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from tweetshop_platform import telemetry
from tweetshop_platform.http import error_body, install_common
from tweetshop_platform.logs import configure_logging
from tweetshop_platform.openapi import (
    COURIER_TOKEN,
    MERCHANT_API_KEY,
    ORDER_ACCESS_TOKEN,
    ORDER_ACCESS_TOKEN_IN_URL,
    install_error_documentation,
)
from tweetshop_platform.proxies import parse_trusted_proxies

from . import buyer_session, gateway
from .config import WebappSettings

STATIC_DIR = Path(str(resources.files("webapp") / "static"))
# The pages: each is one HTML file whose module script does the rest through /api/.
PAGES = {"/": "index.html", "/orders": "orders.html", "/merchant": "merchant.html"}


# Real Stripe.js loads from js.stripe.com and its subdomains, and frames hooks.stripe.com for 3-D Secure.
_REAL_STRIPE_EXTRA = ("https://*.js.stripe.com",)


# What the gateway answers besides the service's own answer, which it passes through as it is.
_PASSED = "as the service answered it"
GATEWAY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": f"A bad request, {_PASSED}"},
    401: {"description": f"No credential, {_PASSED}"},
    403: {"description": f"Not this credential's to do, {_PASSED}"},
    404: {"description": "No public resource of that service at this path, or not found by the service"},
    409: {"description": f"A conflict, {_PASSED}"},
    413: {"description": "The request body is over the limit"},
    422: {"description": f"An invalid request, {_PASSED}"},
    429: {
        "description": "Too many live streams open (`too_many_streams`), or a rate limit of the service: retry "
        "after Retry-After seconds",
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}},
    },
    502: {"description": "The service is not reachable (`upstream_unavailable`)"},
    503: {"description": f"The service cannot answer right now, {_PASSED}"},
    504: {"description": "The service did not answer in time (`upstream_timeout`)"},
}
# The credentials the pages pass through (each operation of the services' own documents names its own); the
# gateway itself checks none, so an operation is also called without one.
GATEWAY_CREDENTIALS = [
    Depends(MERCHANT_API_KEY.optional(anonymous=True)),
    Depends(ORDER_ACCESS_TOKEN.optional(anonymous=True)),
    Depends(ORDER_ACCESS_TOKEN_IN_URL),
    Depends(COURIER_TOKEN.optional(anonymous=True)),
    # The gateway sends the buyer's cookie on as a bearer to checkout's /orders and /buyers/me and feed's
    # /follows and /timeline (buyer_session): documented as the credential it is.
    Depends(buyer_session.BUYER_COOKIE_OPTIONAL),
]


INCLUDE = re.compile(r"<!-- include: ([a-z-]+\.html) -->")


def assemble_page(name: str) -> str:
    """The page ``name`` from the static folder with each ``<!-- include: part.html -->`` replaced by that part's
    text (one level; parts are our own files, never data): markup two pages share is written once."""
    text = (STATIC_DIR / name).read_text(encoding="utf-8")
    return INCLUDE.sub(lambda found: (STATIC_DIR / "parts" / found.group(1)).read_text(encoding="utf-8"), text)


def content_security_policy(settings: WebappSettings) -> str:
    """Scripts from here and Stripe only, none inline; API calls to here and Stripe only; no framing of our pages.

    Every text from data is put into the pages as text (see static/js/common.js, ``el``); this is the second
    line: an injected inline script or event handler would not run.
    """
    origins = list(settings.stripe_origins)
    if not settings.uses_stripe_stand_in:
        origins.extend(_REAL_STRIPE_EXTRA)
    stripe = " ".join(origins)
    # The local stand-in styles itself through element.style (CSSOM), which style-src does not restrict; real
    # Stripe.js also writes style attributes and elements of its own, so only then are inline styles allowed.
    styles = "style-src 'self'" if settings.uses_stripe_stand_in else "style-src 'self' 'unsafe-inline'"
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' {stripe}",
            f"connect-src 'self' {stripe}",
            f"frame-src {stripe}",
            # Product pictures are any http(s) URL a merchant gives.
            "img-src 'self' data: https: http:",
            styles,
            "object-src 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    )


def security_headers(settings: WebappSettings) -> dict[str, str]:
    """What every answer of the web app carries (pages, scripts, API answers and errors alike)."""
    return {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Content-Type-Options": "nosniff",
        # Pages link to the map page, whose URL carries the buyer's token: no Referer anywhere.
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def create_app(settings: WebappSettings | None = None, *, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """The web app; ``transport`` replaces the network to the services (tests)."""
    settings = settings or WebappSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    headers = security_headers(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Ordinary calls and live streams on separate clients and pools (gateway.Gateway), with timeouts.
        async with gateway.Gateway(settings, transport=transport) as upstreams:
            app.state.gateway = upstreams
            app.state.client = upstreams.client
            yield

    app = FastAPI(
        title="tweetshop web app",
        description=(
            "The buyer's timeline, one-tap Buy with Stripe.js, my orders, and the merchant pages. "
            "/api/<catalog|feed|checkout|tracking>/... passes the public API of each service through."
        ),
        version="1.0.0",
        lifespan=lifespan,
    )

    def upstream_answers(name: str, base_url: str) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            response = await app.state.client.get(f"{base_url}/healthz", timeout=settings.readiness_timeout_s)
            if response.status_code != 200:
                raise ConnectionError(f"{name} answered {response.status_code}")

        return check

    install_common(
        app,
        {name: upstream_answers(name, url) for name, url in settings.upstreams.items()},
        max_body_bytes=settings.max_request_body_bytes,
        tracer=telemetry.tracer(settings.service_name),  # None unless TWEETSHOP_TRACING=otlp
        trusted_proxies=parse_trusted_proxies(settings.trusted_proxies),
    )

    @app.middleware("http")
    async def add_security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        # Set, not defaulted: an upstream answer passed through never chooses these.
        for name, value in headers.items():
            response.headers[name] = value
        return response

    @app.get(
        "/config.json",
        operation_id="getClientConfig",
        tags=["pages"],
        summary="What the pages need to know: where Stripe.js comes from",
    )
    async def client_config() -> dict[str, Any]:
        return {
            "stripe": {
                "mode": "stand-in" if settings.uses_stripe_stand_in else "stripe",
                "js_url": settings.stripe_js_url,
                "publishable_key": settings.stripe_publishable_key,
                # The stand-in's API, for the few calls its Stripe.js does not make itself.
                "api_url": settings.stripe_url if settings.uses_stripe_stand_in else None,
            }
        }

    def page(name: str) -> Callable[[], Awaitable[Response]]:
        # Read and assembled once (``assemble_page``: the product sheet is written once, in sheet.html).
        html = assemble_page(name)

        async def serve_page() -> Response:
            # no-cache: a new deploy's pages and scripts are picked up at once (they are small).
            return Response(html, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

        return serve_page

    for path, name in PAGES.items():
        app.add_api_route(path, page(name), methods=["GET"], include_in_schema=False)

    # The buyer's session: checkout's buyer credential in an HttpOnly cookie (buyer_session).
    buyer_session.install(app, settings)

    # Any id: the page itself says when this browser holds no such order.
    app.add_api_route("/orders/{order_id}", page("order.html"), methods=["GET"], include_in_schema=False)

    # One tweet, the link a merchant shares: the page reads it through /api/feed (an id that is not a UUID: 422).
    serve_tweet = page("tweet.html")

    async def tweet_page(tweet_id: uuid.UUID) -> Response:
        return await serve_tweet()

    app.add_api_route("/t/{tweet_id}", tweet_page, methods=["GET"], include_in_schema=False)

    # A shop's page: the timeline of one merchant's tweets (index.html reads the id from the path).
    serve_shop = page("index.html")

    async def shop_page(merchant_id: uuid.UUID) -> Response:
        return await serve_shop()

    app.add_api_route("/m/{merchant_id}", shop_page, methods=["GET"], include_in_schema=False)

    async def api(
        service: Annotated[str, PathParam(description="catalog, feed, checkout or tracking", examples=["feed"])],
        path: Annotated[
            str,
            PathParam(
                description="The path of the service's public resource, e.g. timeline or merchants/{merchant_id}: "
                "its operation in the service's own /openapi.json tells parameters, body and answers",
                examples=["timeline"],
            ),
        ],
        request: Request,
    ) -> Response:
        """The public API of catalog, feed, checkout or tracking, passed through: ``/api/<service>/<path>`` is the
        service's ``/<path>``, with the same query, body and credential."""
        try:
            target = gateway.route(settings.upstreams, service, path)
        except gateway.RouteRefused as exc:
            return JSONResponse(error_body("not_found", str(exc)), status_code=404)
        upstreams: gateway.Gateway = request.app.state.gateway
        return await upstreams.forward(request, target)

    # One route per method: one operation id each (gatewayGet, gatewayPost...).
    for method in gateway.METHODS:
        app.add_api_route(
            "/api/{service}/{path:path}",
            api,
            methods=[method],
            operation_id=f"gateway{method.title()}",
            tags=["gateway"],
            summary=f"{method} a public resource of catalog, feed, checkout or tracking",
            responses=GATEWAY_RESPONSES,
            dependencies=GATEWAY_CREDENTIALS,
        )
    install_error_documentation(app)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
