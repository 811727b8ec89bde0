"""Settings of the checkout service (environment variables TWEETSHOP_*)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from tweetshop_platform.settings import MAKE_A_SECRET, ServiceSettings, secret_problem, stripe_secret_key_problem

WEBHOOK_SECRET_HOW = (
    "use the signing secret (whsec_…) of checkout's endpoint in the Stripe dashboard, or the one "
    f"`stripe listen` prints; for localstripe, make one with {MAKE_A_SECRET}"
)


class CheckoutSettings(ServiceSettings):
    service_name: str = "checkout"
    http_port: int = 8003
    # Both defaults are public development values: outside development checkout refuses them (secret_problems).
    stripe_api_key: SecretStr = SecretStr("sk_test_localstripe")
    stripe_api_base: str | None = Field(
        default=None, description="Stripe API base URL; None means api.stripe.com (localstripe: http://localhost:8420)"
    )
    stripe_webhook_secret: SecretStr = Field(
        default=SecretStr("whsec_localstripe"),
        description=(
            "Signing secret of Stripe's webhooks; while one is rolled, the new and the old one separated by a "
            "comma (a webhook signed with either is accepted)"
        ),
    )
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
    payment_action_deadline_s: float = Field(
        default=600,
        gt=0,
        description=(
            "An order waiting for the buyer to authenticate (3-D Secure) this long after it was placed is cancelled "
            "the same way and its stock returns: a short hold, so unpaid orders cannot keep a product sold out "
            "(at most payment_deadline_s)"
        ),
    )
    unpaid_orders_cap: int = Field(
        default=5,
        ge=0,
        le=1000,
        description=(
            "Most orders waiting for their payment at once for one buyer id, one payment method or one shipping "
            "address; one more is refused with 429 until one is paid or ends (0: no cap)"
        ),
    )
    link_code_failures_limit: str = Field(
        default="600/hour",
        description=(
            "Wrong device link codes (POST /buyers/link) from all clients together, per process; past it, linking "
            "answers 429 to everyone for a while. Bounds guessing from many addresses at once (each address also "
            "has its own signups limit)"
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
    def stripe_webhook_secrets(self) -> list[str]:
        """Every webhook signing secret accepted (one, or two separated by a comma while a secret is rolled)."""
        return [part.strip() for part in self.stripe_webhook_secret.get_secret_value().split(",") if part.strip()]

    def secret_problems(self) -> list[str]:
        """The operator key's, the Stripe key's and each webhook secret's problems (see ServiceSettings)."""
        found = [
            *super().secret_problems(),
            stripe_secret_key_problem(self.variable("stripe_api_key"), self.stripe_api_key.get_secret_value()),
        ]
        webhook = self.variable("stripe_webhook_secret")
        secrets = self.stripe_webhook_secrets or [""]
        for index, secret in enumerate(secrets, start=1):
            name = webhook if len(secrets) == 1 else f"{webhook} (secret {index} of {len(secrets)})"
            found.append(secret_problem(name, secret, how=WEBHOOK_SECRET_HOW))
        return [problem for problem in found if problem]

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
    def action_deadline_s(self) -> float:
        """The hold of an order waiting for 3-D Secure: the shorter of the two deadlines."""
        return min(self.payment_action_deadline_s, self.payment_deadline_s)

    @property
    def stripe_livemode(self) -> bool:
        """Whether our Stripe key is live: then only live-mode intents pay orders, otherwise only test-mode ones."""
        return self.stripe_api_key.get_secret_value().startswith(("sk_live_", "rk_live_"))

    @property
    def payment_lease_s(self) -> float:
        """How long a claimed payment stays with its worker: longer than Stripe's slowest answer with retries."""
        return self.stripe_timeout_s * (self.stripe_max_network_retries + 1) + self.payment_lease_margin_s
