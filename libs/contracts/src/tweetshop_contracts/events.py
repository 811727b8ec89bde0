"""Every v1 event as a pydantic model, grouped by topic.

Each event is the envelope plus its own fields, flat in one JSON object.
Extending an event means adding an optional field; removing or retyping one
needs a v2 topic.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from . import topics
from .envelope import Currency, Envelope, MinorAmount, UtcDatetime

Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
Quantity = Annotated[int, Field(ge=1, le=10_000)]
ProductStatus = Literal["active", "delisted"]


class Destination(BaseModel):
    """Where a parcel goes: only what tracking needs (no name or street: those stay in checkout)."""

    model_config = ConfigDict(frozen=True)

    city: str = Field(max_length=200)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")
    lat: Latitude
    lon: Longitude


# --- catalog.merchants.v1 (an extension of contract v1) -------------------------------


class MerchantRegistered(Envelope):
    """A merchant joined: feed shows its handle and name on tweets."""

    TOPIC = topics.CATALOG_MERCHANTS
    KEY_FIELD = "merchant_id"

    event_type: Literal["MerchantRegistered"] = "MerchantRegistered"
    merchant_id: uuid.UUID
    handle: str = Field(max_length=50)
    name: str = Field(max_length=200)
    api_key_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description=(
            "SHA-256 (hex) of the merchant's API key: feed and checkout check the key a merchant presents with it "
            "without ever seeing the key. A verifier of a random 256-bit secret, not the secret."
        ),
    )


class MerchantApiKeyRotated(Envelope):
    """A merchant replaced its API key: from this event on only the new key works, in every service."""

    TOPIC = topics.CATALOG_MERCHANTS
    KEY_FIELD = "merchant_id"

    event_type: Literal["MerchantApiKeyRotated"] = "MerchantApiKeyRotated"
    merchant_id: uuid.UUID
    api_key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 (hex) of the new API key")


# --- catalog.products.v1 ---------------------------------------------------------------


class _ProductEvent(Envelope):
    TOPIC = topics.CATALOG_PRODUCTS
    KEY_FIELD = "product_id"

    product_id: uuid.UUID
    merchant_id: uuid.UUID
    title: str = Field(max_length=200)
    description: str = Field(default="", max_length=5000)
    image_url: str | None = Field(default=None, max_length=2000)
    price_minor: MinorAmount
    currency: Currency
    stock_available: int = Field(ge=0, description="Units that can still be bought")
    status: ProductStatus = "active"
    version: int = Field(
        ge=1, description="Product version; increases with every change, so readers can drop stale ones"
    )
    units_reserved_total: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Units ever reserved for this product, as of this version (never goes down: a release or a sale does "
            "not undo a reservation). A reader that also counts the StockReserved events it has applied can tell "
            "which reservations this state already shows. Absent from producers older than contract 1.3.0"
        ),
    )


class ProductListed(_ProductEvent):
    """A merchant listed a new product."""

    event_type: Literal["ProductListed"] = "ProductListed"


class ProductUpdated(_ProductEvent):
    """A product's price, title, stock or status changed (its full new state)."""

    event_type: Literal["ProductUpdated"] = "ProductUpdated"


# --- catalog.reservations.v1 -----------------------------------------------------------


class _ReservationEvent(Envelope):
    TOPIC = topics.CATALOG_RESERVATIONS
    KEY_FIELD = "order_id"

    order_id: uuid.UUID
    product_id: uuid.UUID
    quantity: Quantity


class StockReserved(_ReservationEvent):
    """Stock was set aside for an order."""

    event_type: Literal["StockReserved"] = "StockReserved"


class StockRejected(_ReservationEvent):
    """Stock could not be reserved for an order (sold out, unknown or delisted product, currency mismatch)."""

    event_type: Literal["StockRejected"] = "StockRejected"
    reason: str = Field(max_length=500)


class StockReleased(_ReservationEvent):
    """Reserved (or sold and returned) stock went back on sale."""

    event_type: Literal["StockReleased"] = "StockReleased"
    reason: str = Field(max_length=500)


# --- catalog.allocations.v1 -----------------------------------------------------------


class StockAllocated(Envelope):
    """Catalog set units of a product aside for checkout to reserve from on its own, in the order's transaction
    (contract 1.4.0). Checkout reserves from its allocation without asking catalog per order, and says so in
    ``OrderPlaced.allocation_generation``; catalog then records the reservation and still announces it
    (``StockReserved``) as for any other order. Units on sale (``ProductUpdated.stock_available``) include the
    allocated ones: an allocation moves no unit off sale.

    A higher ``generation`` replaces the allocation (with ``units``, possibly 0: catalog takes back what was
    allocated before, as when the merchant sets the stock below it); the same generation adds ``units`` to it.
    The rule (higher replaces, equal adds, lower is stale) gives the same allocation in any order of delivery.
    Checkout gives back what a replacement or a stale event leaves it (``StockAllocationReturned``). Other
    subscribers may ignore it."""

    TOPIC = topics.CATALOG_ALLOCATIONS
    KEY_FIELD = "product_id"

    event_type: Literal["StockAllocated"] = "StockAllocated"
    product_id: uuid.UUID
    generation: int = Field(ge=0, le=2**31 - 1, description="Replaces the allocation when higher; adds when equal")
    units: int = Field(ge=0, le=1_000_000, description="Units set aside for checkout by this event")


# --- checkout.allocations.v1 ----------------------------------------------------------


class StockAllocationReturned(Envelope):
    """Checkout gives back allocated units it will never reserve (contract 1.4.0): the units it had left of a
    generation when a higher one replaced it, or the units of a StockAllocated that came after a higher
    generation. Every allocated unit is either reserved by an order (``OrderPlaced.allocation_generation``) or
    returned here, once. Catalog's business; other subscribers may ignore it."""

    TOPIC = topics.CHECKOUT_ALLOCATIONS
    KEY_FIELD = "product_id"

    event_type: Literal["StockAllocationReturned"] = "StockAllocationReturned"
    product_id: uuid.UUID
    generation: int = Field(ge=0, le=2**31 - 1, description="The generation the units were allocated in")
    units: int = Field(ge=0, le=1_000_000, description="Units given back")


# --- feed.buyable-tweets.v1 ------------------------------------------------------------


class BuyableTweetPosted(Envelope):
    """A merchant posted a tweet that carries a product."""

    TOPIC = topics.FEED_BUYABLE_TWEETS
    KEY_FIELD = "tweet_id"

    event_type: Literal["BuyableTweetPosted"] = "BuyableTweetPosted"
    tweet_id: uuid.UUID
    merchant_id: uuid.UUID
    product_id: uuid.UUID
    text: str = Field(max_length=1000)
    price_minor: MinorAmount
    currency: Currency
    posted_at: UtcDatetime


# --- checkout.orders.v1 ----------------------------------------------------------------


class _OrderEvent(Envelope):
    TOPIC = topics.CHECKOUT_ORDERS
    KEY_FIELD = "order_id"

    order_id: uuid.UUID
    product_id: uuid.UUID
    quantity: Quantity


class OrderPlaced(_OrderEvent):
    """A buyer placed an order; catalog is asked to reserve its stock."""

    event_type: Literal["OrderPlaced"] = "OrderPlaced"
    tweet_id: uuid.UUID
    buyer_id: str = Field(max_length=200, description="Opaque buyer id (no e-mail on topics)")
    amount_minor: MinorAmount
    currency: Currency
    unit_price_minor: MinorAmount
    allocation_generation: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description=(
            "Set when checkout reserved the units itself, from the allocation of this generation (StockAllocated): "
            "the order is already due for payment, and catalog records the reservation instead of deciding it. "
            "Absent: catalog is asked to reserve, as before contract 1.4.0"
        ),
    )


class OrderPaid(_OrderEvent):
    """The order's payment succeeded; tracking creates its shipment."""

    event_type: Literal["OrderPaid"] = "OrderPaid"
    amount_minor: MinorAmount
    currency: Currency
    payment_intent_id: str
    destination: Destination
    buyer_access_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description=(
            "SHA-256 (hex) of the buyer's order access token: tracking checks the buyer's token with it without "
            "ever seeing the token. A verifier of a random 256-bit secret, not the secret and not personal data."
        ),
    )


class OrderPaymentFailed(_OrderEvent):
    """The payment failed; catalog releases the reserved stock."""

    event_type: Literal["OrderPaymentFailed"] = "OrderPaymentFailed"
    reason: str = Field(max_length=500)
    stock_reserved: bool = Field(default=True, description="Whether stock had been reserved and must be released")


class OrderCancelled(_OrderEvent):
    """The order was cancelled before payment (by the buyer, a rejected reservation or a deadline)."""

    event_type: Literal["OrderCancelled"] = "OrderCancelled"
    reason: str = Field(max_length=500)
    stock_reserved: bool = Field(default=True, description="Whether stock had been reserved and must be released")


class OrderRefunded(_OrderEvent):
    """Money went back to the buyer, fully or partly."""

    event_type: Literal["OrderRefunded"] = "OrderRefunded"
    amount_minor: MinorAmount = Field(description="Amount refunded by this refund")
    refunded_total_minor: MinorAmount = Field(description="Amount refunded so far, this refund included")
    currency: Currency
    full: bool = Field(description="The whole amount paid has now been refunded")
    restock: bool = Field(description="Goods return to stock (catalog releases the quantity)")


class OrderBuyerErased(_OrderEvent):
    """The order's buyer deleted the account (an additive event of contract v1): the order stays for the
    merchant's records, and every reader erases the buyer's personal data it keeps for this order (tracking: the
    delivery point, kept only to one decimal of a degree, and the courier's track). Carries nothing personal."""

    event_type: Literal["OrderBuyerErased"] = "OrderBuyerErased"


# --- checkout.buyers.v1 (an extension of contract v1) ----------------------------------
#
# What other services need to know of a buyer account: its opaque id and the hashes of its credentials, so they
# can check a buyer's bearer credential without ever seeing one (feed's follows). Never an e-mail, a name, an
# address or a card. Every event names the credentials it is about, so a reader that gets them in any order (an
# at-least-once re-publish, a dead letter redriven later) ends in the same state: a revoked or deleted credential
# is never taken back.

BuyerId = Annotated[
    str, Field(pattern=r"^ba_[0-9a-f]{32}$", description="The buyer account's opaque id (`ba_` and 32 hex digits)")
]
CredentialSha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _BuyerEvent(Envelope):
    TOPIC = topics.CHECKOUT_BUYERS
    KEY_FIELD = "buyer_id"

    buyer_id: BuyerId


class BuyerCredentialIssued(_BuyerEvent):
    """A buyer account got a credential (its first device, or one linked with a code)."""

    event_type: Literal["BuyerCredentialIssued"] = "BuyerCredentialIssued"
    credential_sha256: CredentialSha256 = Field(
        description=(
            "SHA-256 (hex) of the new buyer credential (`tsb_…`): a reader checks the bearer a buyer presents with "
            "it without ever seeing the credential. A verifier of a random 256-bit secret, not the secret."
        )
    )


class BuyerCredentialsRevoked(_BuyerEvent):
    """Credentials of a buyer stopped working (signed out everywhere): a reader refuses each of them from now on,
    and never takes one back, whatever order it reads this event and their issue in."""

    event_type: Literal["BuyerCredentialsRevoked"] = "BuyerCredentialsRevoked"
    credential_sha256s: list[CredentialSha256] = Field(
        max_length=1000,
        description=(
            "SHA-256 (hex) of every credential revoked (a buyer with more devices gets several events). "
            "Empty when the buyer had none left."
        ),
    )


class BuyerDeleted(_BuyerEvent):
    """A buyer deleted the account: every credential of it is dead, and readers erase what they keep of the buyer
    (feed: its follows). A credential issued to this buyer and read later is refused."""

    event_type: Literal["BuyerDeleted"] = "BuyerDeleted"


# --- tracking.shipments.v1 -------------------------------------------------------------

ShipmentStatus = Literal[
    "label_created", "picked_up", "in_transit", "out_for_delivery", "delivered", "exception", "cancelled"
]


class ShipmentCreated(Envelope):
    """A paid order got a shipment."""

    TOPIC = topics.TRACKING_SHIPMENTS
    KEY_FIELD = "shipment_id"

    event_type: Literal["ShipmentCreated"] = "ShipmentCreated"
    shipment_id: uuid.UUID
    order_id: uuid.UUID
    status: ShipmentStatus
    destination: Destination


class ShipmentStatusChanged(Envelope):
    """A shipment moved to another status."""

    TOPIC = topics.TRACKING_SHIPMENTS
    KEY_FIELD = "shipment_id"

    event_type: Literal["ShipmentStatusChanged"] = "ShipmentStatusChanged"
    shipment_id: uuid.UUID
    order_id: uuid.UUID
    from_status: ShipmentStatus
    to_status: ShipmentStatus


# --- tracking.locations.v1 -------------------------------------------------------------


class ShipmentLocationUpdated(Envelope):
    """A courier reported where the parcel is."""

    TOPIC = topics.TRACKING_LOCATIONS
    KEY_FIELD = "shipment_id"

    event_type: Literal["ShipmentLocationUpdated"] = "ShipmentLocationUpdated"
    shipment_id: uuid.UUID
    order_id: uuid.UUID
    lat: Latitude
    lon: Longitude
    recorded_at: UtcDatetime
    speed: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False, description="m/s")
    heading: float | None = Field(default=None, ge=0, lt=360, allow_inf_nan=False, description="degrees")
    accuracy: float | None = Field(default=None, ge=0, le=100_000, allow_inf_nan=False, description="metres")


MerchantEvent = Annotated[MerchantRegistered | MerchantApiKeyRotated, Field(discriminator="event_type")]
ProductEvent = Annotated[ProductListed | ProductUpdated, Field(discriminator="event_type")]
ReservationEvent = Annotated[StockReserved | StockRejected | StockReleased, Field(discriminator="event_type")]
AllocationEvent = StockAllocated
AllocationReturnEvent = StockAllocationReturned
BuyableTweetEvent = BuyableTweetPosted
OrderEvent = Annotated[
    OrderPlaced | OrderPaid | OrderPaymentFailed | OrderCancelled | OrderRefunded | OrderBuyerErased,
    Field(discriminator="event_type"),
]
BuyerEvent = Annotated[
    BuyerCredentialIssued | BuyerCredentialsRevoked | BuyerDeleted, Field(discriminator="event_type")
]
ShipmentEvent = Annotated[ShipmentCreated | ShipmentStatusChanged, Field(discriminator="event_type")]
LocationEvent = ShipmentLocationUpdated

EVENT_TYPES: tuple[type[Envelope], ...] = (
    MerchantRegistered,
    MerchantApiKeyRotated,
    ProductListed,
    ProductUpdated,
    StockReserved,
    StockRejected,
    StockReleased,
    StockAllocated,
    BuyableTweetPosted,
    OrderPlaced,
    OrderPaid,
    OrderPaymentFailed,
    OrderCancelled,
    OrderRefunded,
    OrderBuyerErased,
    BuyerCredentialIssued,
    BuyerCredentialsRevoked,
    BuyerDeleted,
    StockAllocationReturned,
    ShipmentCreated,
    ShipmentStatusChanged,
    ShipmentLocationUpdated,
)

TOPIC_EVENTS: dict[str, TypeAdapter[Envelope]] = {
    topics.CATALOG_MERCHANTS: TypeAdapter(MerchantEvent),
    topics.CATALOG_PRODUCTS: TypeAdapter(ProductEvent),
    topics.CATALOG_RESERVATIONS: TypeAdapter(ReservationEvent),
    topics.CATALOG_ALLOCATIONS: TypeAdapter(AllocationEvent),
    topics.FEED_BUYABLE_TWEETS: TypeAdapter(BuyableTweetEvent),
    topics.CHECKOUT_ORDERS: TypeAdapter(OrderEvent),
    topics.CHECKOUT_BUYERS: TypeAdapter(BuyerEvent),
    topics.CHECKOUT_ALLOCATIONS: TypeAdapter(AllocationReturnEvent),
    topics.TRACKING_SHIPMENTS: TypeAdapter(ShipmentEvent),
    topics.TRACKING_LOCATIONS: TypeAdapter(LocationEvent),
}


ENVELOPE_FIELDS = ("event_id", "event_type", "schema_version", "occurred_at", "producer", "correlation_id")


def event_types_of(topic: str) -> frozenset[str]:
    """The event types the v1 contract defines for ``topic``."""
    return frozenset(cls.model_fields["event_type"].default for cls in EVENT_TYPES if cls.TOPIC == topic)


def decode_event(topic: str, value: bytes) -> Envelope:
    """Decode and validate one message value from ``topic``; raises ValueError on anything else.

    Unlike building an event in code, decoding never invents an ``event_id`` or a
    timestamp: a message without its envelope is refused (dedupe depends on it).
    """
    adapter = TOPIC_EVENTS.get(topic)
    if adapter is None:
        raise ValueError(f"no v1 contract for topic {topic!r}")
    try:
        raw = json.loads(value)
    except (ValueError, RecursionError) as exc:  # also numbers past Python's digit limit, and deep nesting
        raise ValueError(f"message is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError("message is not a JSON object")
    missing = [name for name in ENVELOPE_FIELDS if name not in raw]
    if missing:
        raise ValueError(f"envelope field(s) missing: {', '.join(missing)}")
    return adapter.validate_python(raw)
