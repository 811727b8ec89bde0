"""The web app in this process, its four services answered by a handler of the test's (an in-memory transport)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from webapp.config import WebappSettings
from webapp.main import create_app

Handler = Callable[[httpx.Request], Any]
OpenWebapp = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]

SETTINGS = WebappSettings(
    catalog_url="http://catalog.test",
    feed_url="http://feed.test",
    checkout_url="http://checkout.test",
    tracking_url="http://tracking.test",
    stripe_url="http://127.0.0.1:8420",
    log_format="console",
    log_level="WARNING",
)


@pytest.fixture
def webapp_settings() -> WebappSettings:
    """The four services at made-up addresses, browsers loading Stripe.js from the local stand-in."""
    return SETTINGS


@pytest.fixture
def real_stripe(webapp_settings: WebappSettings) -> WebappSettings:
    """The same, with browsers loading Stripe.js from Stripe (a live publishable key)."""
    return webapp_settings.model_copy(update={"stripe_url": "", "stripe_publishable_key": "pk_live_abc"})


@pytest.fixture
def webapp(webapp_settings: WebappSettings) -> OpenWebapp:
    """``async with webapp(handler[, settings]) as client``: the web app, its services answered by ``handler``."""

    @contextlib.asynccontextmanager
    async def open_webapp(
        handler: Handler, settings: WebappSettings = webapp_settings
    ) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings, transport=httpx.MockTransport(handler))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://webapp") as client:
                yield client

    return open_webapp
