"""Who produces and who consumes each v1 topic: the table the AsyncAPI document and docs/topics.md come from.

Derived from the one declaration of the system (``system.SYSTEM``): edit that, not this. The event types of
a topic and its message key are not repeated there either: they come from the models in ``events.py``
(``TOPIC`` and ``KEY_FIELD``).
"""

from __future__ import annotations

from .envelope import Envelope
from .system import (
    DEFAULT_PARTITIONS,
    DEFAULT_REPLICATION_FACTOR,
    DLQ_CONFIG,
    PARTITIONS_SETTING,
    REPLICATION_FACTOR_SETTING,
    SYSTEM,
    Consumer,
    TopicConfig,
    TopicSpec,
)

__all__ = [
    "CONTRACT_VERSION",
    "DEFAULT_PARTITIONS",
    "DEFAULT_REPLICATION_FACTOR",
    "DLQ_CONFIG",
    "DLQ_HEADERS",
    "DLQ_OPTIONAL_HEADERS",
    "DLQ_RETENTION",
    "PARTITIONS_SETTING",
    "PERSONAL_DATA",
    "REPLICATION_FACTOR_SETTING",
    "TOPICS",
    "Consumer",
    "TopicConfig",
    "TopicSpec",
    "events_of",
    "key_field",
    "topic_spec",
]

# The version of the AsyncAPI document: bump the minor version with every compatible extension.
CONTRACT_VERSION = "1.4.0"

TOPICS: tuple[TopicSpec, ...] = SYSTEM.topic_specs()

DLQ_RETENTION = "30 days: long enough for someone to look at a parked message and replay it."

# Fields that identify or locate a person. Nothing else on a topic does: no e-mail, names or street addresses.
PERSONAL_DATA: dict[str, str] = {
    "OrderPlaced.buyer_id": "an opaque buyer id (no e-mail or name travels on topics)",
    "OrderPaid.destination": "city, country and coordinates of the delivery address (tracking needs them)",
    "BuyerCredentialIssued.buyer_id": "an opaque buyer account id (no e-mail, name or address travels on topics)",
    "BuyerCredentialsRevoked.buyer_id": "an opaque buyer account id",
    "BuyerDeleted.buyer_id": "an opaque buyer account id: readers erase what they keep of this buyer",
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
    return SYSTEM.events_of(topic)


def key_field(topic: str) -> str:
    """The field whose value is the message key of every event on ``topic``."""
    return SYSTEM.key_field(topic)


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
