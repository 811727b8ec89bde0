"""Settings of the checkout service (environment variables TWEETSHOP_*)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from tweetshop_platform.settings import ServiceSettings


class CheckoutSettings(ServiceSettings):
    service_name: str = "checkout"
    http_port: int = 8003
    stripe_api_key: SecretStr = SecretStr("sk_test_localstripe")
    stripe_api_base: str | None = Field(
        default=None, description="Stripe API base URL; None means api.stripe.com (localstripe: http://localhost:8420)"
    )
    stripe_webhook_secret: SecretStr = SecretStr("whsec_localstripe")
    stripe_max_network_retries: int = 2
    tracking_public_url: str = Field(default="http://localhost:8004", description="Base URL of tracking for tracking_url")
