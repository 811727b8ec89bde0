"""webapp: the buyer's pages, the merchant's pages, and the gateway they call. The only wiring."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from tweetshop_platform.http import error_body, install_common
from tweetshop_platform.logs import configure_logging

from . import gateway
from .config import WebappSettings

STATIC_DIR = Path(str(resources.files("webapp") / "static"))
# The pages: each is one HTML file whose module script does the rest through /api/.
PAGES = {"/": "index.html", "/orders": "orders.html", "/merchant": "merchant.html"}


# Real Stripe.js loads from js.stripe.com and its subdomains, and frames hooks.stripe.com for 3-D Secure.
_REAL_STRIPE_EXTRA = ("https://*.js.stripe.com",)


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
    )

    @app.middleware("http")
    async def add_security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        # Set, not defaulted: an upstream answer passed through never chooses these.
        for name, value in headers.items():
            response.headers[name] = value
        return response

    @app.get("/config.json", tags=["pages"], summary="What the pages need to know: where Stripe.js comes from")
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

    def page(name: str) -> Callable[[], Awaitable[FileResponse]]:
        async def serve_page() -> FileResponse:
            # no-cache: a new deploy's pages and scripts are picked up at once (they are small).
            return FileResponse(STATIC_DIR / name, media_type="text/html", headers={"Cache-Control": "no-cache"})

        return serve_page

    for path, name in PAGES.items():
        app.add_api_route(path, page(name), methods=["GET"], include_in_schema=False)

    # Any id: the page itself says when this browser holds no such order.
    app.add_api_route("/orders/{order_id}", page("order.html"), methods=["GET"], include_in_schema=False)

    @app.api_route("/api/{service}/{path:path}", methods=gateway.METHODS, tags=["gateway"])
    async def api(service: str, path: str, request: Request) -> Response:
        """The public API of catalog, feed, checkout or tracking, passed through."""
        try:
            target = gateway.route(settings.upstreams, service, path)
        except gateway.RouteRefused as exc:
            return JSONResponse(error_body("not_found", str(exc)), status_code=404)
        upstreams: gateway.Gateway = request.app.state.gateway
        return await upstreams.forward(request, target)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
