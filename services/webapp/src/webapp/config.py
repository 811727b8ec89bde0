"""Settings of the web app (environment variables TWEETSHOP_*). No database, no broker: only the four APIs."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from tweetshop_platform.proxies import parse_trusted_proxies

REAL_STRIPE_JS = "https://js.stripe.com/v3/"
_REAL_STRIPE_API_HOSTS = {"api.stripe.com", "js.stripe.com"}


def _base_url(value: str) -> str:
    """An http(s) base URL without a trailing slash."""
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL such as http://localhost:8001, not {value!r}")
    return value


class WebappSettings(BaseSettings):
    """Where the four APIs are (for the gateway) and where browsers load Stripe.js from."""

    model_config = SettingsConfigDict(env_prefix="TWEETSHOP_", extra="ignore")

    service_name: str = "webapp"
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8000, ge=1, le=65535)

    catalog_url: str = Field(default="http://localhost:8001", description="catalog, behind /api/catalog/")
    feed_url: str = Field(default="http://localhost:8002", description="feed, behind /api/feed/")
    checkout_url: str = Field(default="http://localhost:8003", description="checkout, behind /api/checkout/")
    tracking_url: str = Field(default="http://localhost:8004", description="tracking, behind /api/tracking/")

    stripe_url: str = Field(
        default="",
        description=(
            "The Stripe API base as browsers reach it. A local stand-in (localstripe, e.g. http://localhost:8420) "
            "serves its Stripe.js at <stripe_url>/js.stripe.com/v3/; empty or https://api.stripe.com means real "
            "Stripe and https://js.stripe.com/v3/"
        ),
    )
    stripe_publishable_key: str = Field(
        default="pk_test_tweetshop_dev",
        pattern=r"^pk_(test|live)_[A-Za-z0-9_]+$",
        description="Publishable key for Stripe.js (localstripe accepts any pk_test_...)",
    )

    # --- the gateway: timeouts on every upstream call, live streams on a pool of their own, capped ---------------
    upstream_timeout_s: float = Field(
        default=15, gt=0, description="Longest wait for the next bytes of an API answer (ordinary calls: read timeout)"
    )
    upstream_connect_timeout_s: float = Field(default=3, gt=0, description="Longest wait to connect to an API")
    upstream_write_timeout_s: float = Field(default=15, gt=0, description="Longest wait to send a request to an API")
    upstream_pool_timeout_s: float = Field(
        default=5,
        gt=0,
        description="Longest wait for a free connection of the pool (then 504); streams and calls have separate pools",
    )
    upstream_max_connections: int = Field(
        default=200, ge=1, description="Connections to the APIs for ordinary calls (live streams never take these)"
    )
    stream_read_timeout_s: float = Field(
        default=60,
        gt=0,
        description=(
            "A live stream silent this long (tracking sends a heartbeat every 15 s) is cut; the page reconnects"
        ),
    )
    stream_max_open: int = Field(
        default=1000, ge=1, description="Live streams open at once through this web app (also the size of their pool)"
    )
    stream_max_per_credential: int = Field(
        default=4,
        ge=1,
        description="Live streams open at once per credential (a buyer's order token), or per address without one",
    )
    stream_retry_after_s: int = Field(default=10, ge=1, description="Retry-After of a stream refused over a cap (429)")
    trusted_proxies: str = Field(
        default="",
        description=(
            "Comma-separated addresses or networks of proxies in front of the web app whose X-Forwarded-For is "
            "believed. The gateway sends the buyer's address on to the APIs as X-Forwarded-For (the APIs believe it "
            "when their own trusted_proxies names the web app). Only from these is a trace context continued"
        ),
    )
    readiness_timeout_s: float = Field(default=2, gt=0, description="Per upstream, for GET /readyz")
    max_request_body_bytes: int = 1_000_000
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("catalog_url", "feed_url", "checkout_url", "tracking_url")
    @classmethod
    def _service_url(cls, value: str) -> str:
        return _base_url(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        parse_trusted_proxies(value)
        return value

    @field_validator("stripe_url")
    @classmethod
    def _stripe_url(cls, value: str) -> str:
        return _base_url(value) if value.strip() else ""

    @property
    def upstreams(self) -> dict[str, str]:
        """Gateway name → base URL of the service behind ``/api/<name>/``."""
        return {
            "catalog": self.catalog_url,
            "feed": self.feed_url,
            "checkout": self.checkout_url,
            "tracking": self.tracking_url,
        }

    @property
    def uses_stripe_stand_in(self) -> bool:
        """True when browsers talk to a local Stripe stand-in rather than Stripe itself."""
        return bool(self.stripe_url) and urlsplit(self.stripe_url).hostname not in _REAL_STRIPE_API_HOSTS

    @property
    def stripe_js_url(self) -> str:
        """Where pages load Stripe.js from: the stand-in's copy, or the real one."""
        return f"{self.stripe_url}/js.stripe.com/v3/" if self.uses_stripe_stand_in else REAL_STRIPE_JS

    @property
    def stripe_origins(self) -> list[str]:
        """Origins the pages may load scripts from, call and frame for payments (for the CSP)."""
        if self.uses_stripe_stand_in:
            parts = urlsplit(self.stripe_url)
            return [f"{parts.scheme}://{parts.netloc}"]
        return ["https://js.stripe.com", "https://api.stripe.com", "https://hooks.stripe.com"]
