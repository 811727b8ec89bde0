"""Who produces and who consumes each v1 topic: the one table the AsyncAPI document and docs/topics.md come from.

The event types of a topic and its message key are not repeated here: they come
from the models in ``events.py`` (``TOPIC`` and ``KEY_FIELD``).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import topics
from .envelope import Envelope
from .events import EVENT_TYPES

# The version of the AsyncAPI document: bump the minor version with every compatible extension.
CONTRACT_VERSION = "1.1.0"

DEFAULT_PARTITIONS = 6
PARTITIONS_SETTING = "TWEETSHOP_KAFKA_TOPIC_PARTITIONS"


@dataclass(frozen=True)
class Consumer:
    """A service that reads a topic, and why."""

    service: str
    purpose: str
    # A live view: one throwaway consumer group per process reading from the newest message, committing
    # nothing and parking nothing (every replica sees every message). Otherwise a reliable consumer: one
    # group shared by the service's replicas, from the earliest message, inbox dedupe, dead letters.
    fan_out: bool = False


@dataclass(frozen=True)
class TopicSpec:
    """One v1 topic: its producer, its consumers and what readers may expect of it."""

    name: str
    producer: str
    summary: str
    retention: str
    consumers: tuple[Consumer, ...]

    def dlq(self) -> str | None:
        """The dead-letter topic, when a reliable consumer reads this topic (live views park nothing)."""
        return topics.dlq_topic(self.name) if any(not c.fan_out for c in self.consumers) else None


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        name=topics.CATALOG_MERCHANTS,
        producer="catalog",
        summary=(
            "Merchants who joined, and their API key changes (an extension of contract v1): feed shows their handle "
            "and name on tweets; feed and checkout check a merchant's key against the hash carried here."
        ),
        retention="Forever (`retention.ms=-1`): a new consumer rebuilds its merchant directory from the start.",
        consumers=(
            Consumer("feed", "keeps the merchant handle and name it shows on tweets, and the key it posts with"),
            Consumer("checkout", "checks the API key of a merchant refunding one of its orders"),
        ),
    ),
    TopicSpec(
        name=topics.CATALOG_PRODUCTS,
        producer="catalog",
        summary="Every product's full state after each change (price, title, stock, status).",
        retention="Forever (`retention.ms=-1`): a new consumer rebuilds its product view from the start.",
        consumers=(
            Consumer("checkout", "knows the current price and currency of what a buyer orders"),
            Consumer("feed", "keeps the live product card (price, in stock or sold out) on buyable tweets"),
        ),
    ),
    TopicSpec(
        name=topics.CATALOG_RESERVATIONS,
        producer="catalog",
        summary="The outcome of each stock reservation asked for by an order.",
        retention="At least 7 days (the Kafka default): enough to catch up after an outage.",
        consumers=(Consumer("checkout", "moves the order on: pay once stock is reserved, cancel when it is rejected"),),
    ),
    TopicSpec(
        name=topics.FEED_BUYABLE_TWEETS,
        producer="feed",
        summary="Tweets that carry a product and can be bought from.",
        retention="Forever (`retention.ms=-1`): a new consumer learns every buyable tweet from the start.",
        consumers=(Consumer("checkout", "accepts orders only for a buyable tweet and its product"),),
    ),
    TopicSpec(
        name=topics.CHECKOUT_ORDERS,
        producer="checkout",
        summary="The life of every order: placed, paid, payment failed, cancelled, refunded.",
        retention="At least 7 days (the Kafka default); the order history itself lives in checkout's database.",
        consumers=(
            Consumer("catalog", "reserves stock for a placed order, releases it when it ends unpaid or is refunded"),
            Consumer("tracking", "creates the shipment of a paid order"),
        ),
    ),
    TopicSpec(
        name=topics.TRACKING_SHIPMENTS,
        producer="tracking",
        summary="Shipments of paid orders and every change of their status.",
        retention="At least 7 days (the Kafka default).",
        consumers=(
            Consumer("checkout", "shows the buyer's `tracking_url` once the order has a shipment"),
            Consumer("tracking", "pushes status changes to the live map of every replica", fan_out=True),
        ),
    ),
    TopicSpec(
        name=topics.TRACKING_LOCATIONS,
        producer="tracking",
        summary="Courier GPS points of each shipment, high volume.",
        retention="Short (24 hours is enough): only the live map reads it; the track itself is kept by tracking.",
        consumers=(Consumer("tracking", "pushes each point to the live map of every replica", fan_out=True),),
    ),
)

DLQ_RETENTION = "30 days: long enough for someone to look at a parked message and replay it."

# Fields that identify or locate a person. Nothing else on a topic does: no e-mail, names or street addresses.
PERSONAL_DATA: dict[str, str] = {
    "OrderPlaced.buyer_id": "an opaque buyer id (no e-mail or name travels on topics)",
    "OrderPaid.destination": "city, country and coordinates of the delivery address (tracking needs them)",
    "ShipmentCreated.destination": "city, country and coordinates of the delivery address",
    "ShipmentLocationUpdated.lat": "courier position; near the end of a delivery it points at the buyer's address",
    "ShipmentLocationUpdated.lon": "courier position; near the end of a delivery it points at the buyer's address",
}


def topic_spec(name: str) -> TopicSpec:
    """The spec of one v1 topic."""
    for spec in TOPICS:
        if spec.name == name:
            return spec
    raise KeyError(f"no v1 topic {name!r}")


def events_of(topic: str) -> tuple[type[Envelope], ...]:
    """The event types published on ``topic``, in the order events.py declares them."""
    return tuple(event for event in EVENT_TYPES if topic == event.TOPIC)


def key_field(topic: str) -> str:
    """The field whose value is the message key of every event on ``topic``."""
    fields = {event.KEY_FIELD for event in events_of(topic)}
    if len(fields) != 1:
        raise ValueError(f"events on {topic} must share one key field, found {sorted(fields)}")
    return fields.pop()


# Headers of a message parked on ``<topic>.dlq`` besides the original message's own headers
# (written by tweetshop_platform.consumer; its value and key are the original message's, byte for byte).
DLQ_HEADERS: dict[str, str] = {
    "dlq_error": "The error message (at most 2000 characters)",
    "dlq_error_type": "The exception class, e.g. `ValidationError` or `PermanentError`",
    "dlq_original_topic": "The topic the message was read from (its contract name)",
    "dlq_original_partition": "Its partition there",
    "dlq_original_offset": "Its offset there",
    "dlq_consumer_group": "The consumer group that gave up on it",
    "dlq_attempts": "How many times it was tried",
    "dlq_failed_at": "When it was parked (UTC, ISO-8601)",
}
# Present only on some dead letters.
DLQ_OPTIONAL_HEADERS: dict[str, str] = {
    "dlq_value_truncated_from": (
        "Only on a message too large to park whole: its original size in bytes (the value kept is its first 64 KiB, "
        "each header cut to 1000 characters; the original stays on its topic)"
    ),
}
