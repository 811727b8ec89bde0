"""`tweetshop trace ORDER_ID`: every event of one order across topics (its tweet, reservations, payment,
shipment, courier points, dead letters), in the order they happened."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tweetshop_contracts import BuyableTweetPosted, Envelope, OrderPlaced, topics
from tweetshop_contracts.topics import dlq_topic

from .connect import CommandError, kafka_consumer
from .output import json_line, note, say, table
from .records import Message, read_topics
from .settings import CliSettings

# Topics whose events carry ``order_id``, in the order an order goes through them.
ORDER_TOPICS: tuple[str, ...] = (
    topics.CHECKOUT_ORDERS,
    topics.CATALOG_RESERVATIONS,
    topics.TRACKING_SHIPMENTS,
    topics.TRACKING_LOCATIONS,
)
_RANK = {topic: rank for rank, topic in enumerate((topics.FEED_BUYABLE_TWEETS, *ORDER_TOPICS))}
SUMMARY_FIELDS = (
    "quantity",
    "amount_minor",
    "currency",
    "reason",
    "payment_intent_id",
    "status",
    "from_status",
    "to_status",
    "lat",
    "lon",
    "refunded_total_minor",
    "text",
)


@dataclass(frozen=True)
class Found:
    """One event of the order, where it was read, and whether it sits on a dead-letter topic."""

    event: Envelope
    message: Message

    @property
    def parked(self) -> bool:
        """True for a copy parked on ``<topic>.dlq``."""
        return self.message.topic != self.message.contract_topic

    def sort_key(self) -> tuple[Any, ...]:
        """When it happened, then the usual order of the topics, then the offset."""
        return (self.event.occurred_at, _RANK.get(self.message.contract_topic, 99), self.parked, self.message.offset)

    def summary(self) -> str:
        """The event's telling fields."""
        fields = self.event.model_dump(mode="json")
        parts = [f"{k}={fields[k]}" for k in SUMMARY_FIELDS if fields.get(k) is not None]
        if self.parked:
            h = self.message.headers
            parts.insert(0, f"PARKED by {h.get('dlq_consumer_group', '?')}: {h.get('dlq_error', '')[:120]}")
        return " ".join(parts)


def _matches(message: Message, needle: bytes, field: str, wanted: uuid.UUID) -> Envelope | None:
    if needle not in message.value:  # most messages are other orders': skip decoding them
        return None
    try:
        event = message.decode()
    except ValueError:
        return None
    return event if getattr(event, field, None) == wanted else None


async def run(settings: CliSettings, order_id: str, *, locations: bool, as_json: bool, quiet: bool) -> int:
    """Print the order's events; exit 1 when none is found."""
    try:
        wanted = uuid.UUID(order_id)
    except ValueError:
        raise CommandError(f"ORDER_ID must be a UUID, not {order_id!r}") from None
    ns = settings.topic_namespace
    chosen = [t for t in ORDER_TOPICS if locations or t != topics.TRACKING_LOCATIONS]
    physical = [ns + t for t in chosen] + [ns + dlq_topic(t) for t in chosen]
    found: list[Found] = []
    async with kafka_consumer(settings) as consumer:
        needle = str(wanted).encode()
        async for message in read_topics(consumer, physical, ns, "scanning order topics", show_progress=not quiet):
            if (event := _matches(message, needle, "order_id", wanted)) is not None:
                found.append(Found(event, message))
        # The tweet the order was placed from starts the story.
        tweet_ids = {f.event.tweet_id for f in found if isinstance(f.event, OrderPlaced)}
        for tweet_id in tweet_ids:
            tweets = [ns + topics.FEED_BUYABLE_TWEETS]
            async for message in read_topics(consumer, tweets, ns, "scanning buyable tweets", show_progress=not quiet):
                event = _matches(message, str(tweet_id).encode(), "tweet_id", tweet_id)
                if isinstance(event, BuyableTweetPosted):
                    found.append(Found(event, message))
    if not found:
        where = ", ".join(chosen) + (f" (namespace {ns!r})" if ns else "")
        raise CommandError(f"no event of order {wanted} on {where}")
    found.sort(key=Found.sort_key)
    if as_json:
        for f in found:
            json_line(f.message.as_json() | {"parked": f.parked})
        return 0
    correlation_ids = sorted({f.event.correlation_id for f in found})
    say(f"order {wanted}: {len(found)} events; correlation_id {', '.join(correlation_ids)}")
    rows = [
        (
            f.event.occurred_at.isoformat(timespec="milliseconds"),
            f.message.topic,
            f"p{f.message.partition}@{f.message.offset}",
            f.event.event_type,
            f.event.producer,
            f.summary(),
        )
        for f in found
    ]
    say(table(("OCCURRED AT", "TOPIC", "AT", "EVENT", "BY", "DETAILS"), rows))
    if len(correlation_ids) > 1:
        note("more than one correlation_id: grep the logs for each of them")
    repeated = len(found) - len({(f.event.event_id, f.parked) for f in found})
    if repeated:
        note(f"{repeated} event(s) appear more than once (published again: at-least-once delivery, or a replay)")
    return 0
