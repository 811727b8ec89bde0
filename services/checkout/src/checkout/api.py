"""HTTP request and response bodies of checkout."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tweetshop_platform.validation import RequestBody

from . import access
from .domain import Buyer, Order, OrderStatus, PurchaseRequest, ShippingAddress

PAYMENT_METHOD_ID = re.compile(r"^pm_[A-Za-z0-9_]{1,200}$")
EMAIL = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{16,255}$")
MAX_QUANTITY = 100


class BuyerIn(RequestBody):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=200, description="The buyer's opaque id")
    email: str = Field(max_length=254, pattern=EMAIL, description="Where the receipt goes; never put on topics")


class ShippingIn(RequestBody):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    line1: str = Field(min_length=1, max_length=200, description="Street and number")
    city: str = Field(min_length=1, max_length=200)
    country: str = Field(pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2 country code", examples=["FR"])
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False, description="Latitude of the address (for the live map)")
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False, description="Longitude of the address")

    @field_validator("country")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class OrderIn(RequestBody):
    """A purchase from a tweet. Price and currency come from catalog, never from the buyer."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    tweet_id: uuid.UUID
    product_id: uuid.UUID
    quantity: int = Field(ge=1, le=MAX_QUANTITY, strict=True, description="Units to buy (1 to 100)")
    buyer: BuyerIn
    shipping: ShippingIn
    payment_method: str = Field(
        max_length=203,
        description="A Stripe PaymentMethod id (pm_…) made by Stripe.js in the browser",
        # Documented; checked by the validator below, whose message never echoes the value.
        json_schema_extra={"pattern": PAYMENT_METHOD_ID.pattern},
    )
    save_card: bool = Field(
        default=False,
        strict=True,
        description="Keep this card for the next purchases (a signed-in buyer only: send the buyer credential). "
        "Stripe keeps it on the buyer's Stripe Customer; a later order pays with its `pm_…` id from "
        "`GET /buyers/me/cards`, and only the buyer who saved it can",
    )

    @field_validator("payment_method")
    @classmethod
    def _payment_method_id(cls, value: str) -> str:
        if not PAYMENT_METHOD_ID.match(value):
            # Never echo the value: it may be a card number someone pasted.
            raise ValueError(
                "must be a Stripe PaymentMethod id (pm_…) created by Stripe.js; card numbers are never accepted here"
            )
        return value

    def to_request(self) -> PurchaseRequest:
        """The validated request as a domain object."""
        return PurchaseRequest(
            tweet_id=self.tweet_id,
            product_id=self.product_id,
            quantity=self.quantity,
            buyer=Buyer(id=self.buyer.id, email=self.buyer.email),
            shipping=ShippingAddress(
                name=self.shipping.name,
                line1=self.shipping.line1,
                city=self.shipping.city,
                country=self.shipping.country,
                lat=self.shipping.lat,
                lon=self.shipping.lon,
            ),
            payment_method=self.payment_method,
            save_card=self.save_card,
        )

    def canonical(self) -> str:
        """The normalised body: two requests are the same order when this is equal (``save_card`` only when set,
        so a request from before saved cards is still the same request)."""
        return self.model_dump_json(exclude=None if self.save_card else {"save_card"})


def idempotency_key_problem(key: str | None) -> str | None:
    """Why an Idempotency-Key header is unusable, or None when it is fine."""
    if key is None or not key.strip():
        return "send an Idempotency-Key header (a fresh random value, e.g. a UUID, per purchase)"
    if not IDEMPOTENCY_KEY.match(key):
        # The key also unlocks the replayed answer (with the access token): it must be hard to guess.
        return "the Idempotency-Key must be 16 to 255 visible ASCII characters (e.g. a UUID)"
    return None


class OrderCreated(BaseModel):
    id: uuid.UUID
    status: OrderStatus
    access_token: str = Field(description="Send it as `Authorization: Bearer <access_token>` to read the order")
    amount_minor: int
    currency: str


class ShippingOut(BaseModel):
    name: str
    line1: str
    city: str
    country: str
    lat: float
    lon: float


class OrderOut(BaseModel):
    id: uuid.UUID
    status: OrderStatus
    amount_minor: int = Field(description="Total in minor units: unit price × quantity")
    currency: str
    unit_price_minor: int
    quantity: int
    product_id: uuid.UUID
    tweet_id: uuid.UUID
    merchant_id: uuid.UUID
    payment_intent_id: str | None
    client_secret: str | None = Field(description="Only while requires_action: Stripe.js confirms 3-D Secure with it")
    failure_reason: str | None = Field(description="Only when failed: why the payment failed")
    cancellation_reason: str | None = Field(description="Only when cancelled: why")
    refunded_minor: int
    shipment_id: uuid.UUID | None
    shipment_status: str | None
    tracking_url: str | None = Field(description="The buyer's link to the live map, once a shipment exists")
    shipping: ShippingOut
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, o: Order, *, access_token: str, tracking_base_url: str) -> OrderOut:
        """The buyer's view of the order; the tracking link carries the token the buyer presented."""
        return cls(
            id=o.id,
            status=o.status,
            amount_minor=o.amount_minor,
            currency=o.currency,
            unit_price_minor=o.unit_price_minor,
            quantity=o.quantity,
            product_id=o.product_id,
            tweet_id=o.tweet_id,
            merchant_id=o.merchant_id,
            payment_intent_id=o.payment_intent_id,
            client_secret=o.client_secret if o.status == "requires_action" else None,
            failure_reason=o.failure_reason if o.status == "failed" else None,
            cancellation_reason=o.cancel_reason if o.status == "cancelled" else None,
            refunded_minor=o.refunded_minor,
            shipment_id=o.shipment_id,
            shipment_status=o.shipment_status,
            tracking_url=(
                access.tracking_url(tracking_base_url, o.id, access_token) if o.shipment_id and access_token else None
            ),
            shipping=ShippingOut(
                name=o.shipping.name,
                line1=o.shipping.line1,
                city=o.shipping.city,
                country=o.shipping.country,
                lat=o.shipping.lat,
                lon=o.shipping.lon,
            ),
            created_at=o.created_at,
            updated_at=o.updated_at,
        )


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: int | None = Field(
        default=None, gt=0, le=10**12, strict=True, description="Amount to refund; default: all that is left"
    )


class ReconcileOut(BaseModel):
    taken: int = Field(description="Orders past their deadline this pass took up")
    ended: dict[str, int] = Field(
        description="Where they ended: final status, 'retry' (Stripe unreachable) or 'mismatch' (see "
        "/ops/payment-mismatches) → count"
    )
    still_overdue: int = Field(description="Orders still open past their deadline after the pass")


class WebhookAck(BaseModel):
    received: bool
    outcome: str


class PaymentMismatchOut(BaseModel):
    """News of a PaymentIntent that was not allowed to move its order (the order was left as it was)."""

    order_id: uuid.UUID
    payment_intent_id: str
    reason: str = Field(
        description="foreign_intent (not the order's own intent), unrecorded_intent (a webhook about an intent the "
        "order has not recorded), other_order (the intent names another order), amount, currency, livemode "
        "(the intent charges other than the order), unverified (Stripe's object lacked a field)"
    )
    source: str = Field(description="Who saw it: worker, webhook, reconciler or buyer_cancel")
    outcome: str = Field(description="What the intent said: paid, failed, cancelled, requires_action, processing")
    intent_amount_minor: int | None
    intent_currency: str | None
    intent_livemode: bool | None
    first_seen_at: datetime
    last_seen_at: datetime
    times_seen: int
