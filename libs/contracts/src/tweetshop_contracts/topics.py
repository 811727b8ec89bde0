"""Topic names of contract v1. Names are fixed: extend, never rename."""

from __future__ import annotations

CATALOG_MERCHANTS = "catalog.merchants.v1"
CATALOG_PRODUCTS = "catalog.products.v1"
CATALOG_RESERVATIONS = "catalog.reservations.v1"
CATALOG_ALLOCATIONS = "catalog.allocations.v1"
FEED_BUYABLE_TWEETS = "feed.buyable-tweets.v1"
CHECKOUT_ORDERS = "checkout.orders.v1"
CHECKOUT_BUYERS = "checkout.buyers.v1"
CHECKOUT_ALLOCATIONS = "checkout.allocations.v1"
TRACKING_SHIPMENTS = "tracking.shipments.v1"
TRACKING_LOCATIONS = "tracking.locations.v1"

ALL_TOPICS: tuple[str, ...] = (
    CATALOG_MERCHANTS,
    CATALOG_PRODUCTS,
    CATALOG_RESERVATIONS,
    CATALOG_ALLOCATIONS,
    FEED_BUYABLE_TWEETS,
    CHECKOUT_ORDERS,
    CHECKOUT_BUYERS,
    CHECKOUT_ALLOCATIONS,
    TRACKING_SHIPMENTS,
    TRACKING_LOCATIONS,
)

DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic where a message that failed its bounded retries on ``topic`` is parked."""
    return topic + DLQ_SUFFIX
