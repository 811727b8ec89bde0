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
    tracking_public_url: str = Field(
        default="http://localhost:8004", description="Base URL of tracking for tracking_url"
    )

    stripe_timeout_s: float = Field(default=20, gt=0, description="Timeout of one HTTP call to Stripe")
    stripe_webhook_tolerance_s: int = Field(default=300, ge=1, description="Oldest webhook signature accepted")
    payment_poll_interval_s: float = Field(default=1.0, gt=0, description="How often the payment worker looks for work")
    payment_batch_size: int = Field(
        default=100, ge=1, le=500, description="Most orders the payment worker claims in one transaction"
    )
    payment_max_in_flight: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Most orders with Stripe at once (each one call in flight); also the Stripe HTTP connection pool",
    )
    payment_retry_max_backoff_s: float = Field(
        default=300, gt=0, description="Longest wait between retries while Stripe is unreachable"
    )
    payment_recheck_interval_s: float = Field(
        default=30, gt=0, description="How often an undecided payment (3-D Secure, processing) is checked with Stripe"
    )
    payment_deadline_s: float = Field(
        default=1800,
        gt=0,
        description=(
            "An order not paid this long after it was placed is cancelled: its PaymentIntent is cancelled at Stripe "
            "and catalog releases its stock (the reservation's deadline)"
        ),
    )
    reconcile_interval_s: float = Field(
        default=30, gt=0, description="How often the reconciler looks for orders still open past their deadline"
    )
    payment_lease_margin_s: float = Field(
        default=30, ge=0, description="Added to Stripe's slowest answer to make a payment step's lease"
    )
    refund_recheck_after_s: float = Field(
        default=60, gt=0, description="A refund whose Stripe answer was lost is completed by the worker after this"
    )

    @property
    def stripe_base_url(self) -> str | None:
        """The Stripe API base, or None for api.stripe.com (an empty setting means the default too)."""
        return self.stripe_api_base.rstrip("/") if self.stripe_api_base else None

    @property
    def stripe_is_localstripe(self) -> bool:
        """Whether the Stripe API is localstripe (any base URL other than api.stripe.com)."""
        base = self.stripe_base_url
        return base is not None and "api.stripe.com" not in base

    @property
    def payment_lease_s(self) -> float:
        """How long a claimed payment stays with its worker: longer than Stripe's slowest answer with retries."""
        return self.stripe_timeout_s * (self.stripe_max_network_retries + 1) + self.payment_lease_margin_s
